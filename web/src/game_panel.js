// The connect-four panel: draws a game (game.js) into the page's #game
// section and turns clicks and keys into requests. Draws a plain model (see
// View._gameModel), so a player's game and a spectator's replay look alike.
// Text from the network is only ever set as textContent.

import { COLUMNS, ROWS, landingRow } from './game.js';

import { $, setAttr, setText } from './dom.js';

const COLOUR = ['empty', 'red', 'yellow'];

export class GamePanel {
  /**
   * @param {{onLeft(): void, onRight(): void, onDrop(column?: number): void, onReady(): void,
   *          onJoin(): void, onLeave(): void, onClose(): void}} actions
   */
  constructor(actions) {
    this.actions = actions;
    this.root = $('game');
    this.board = $('game-board');
    this.model = null;
    /** The board last drawn, and for which conversation: new discs fall in. */
    this.drawn = null;
    this.drawnKey = null;
    /** cells[column][row] */
    this.cells = Array.from({ length: COLUMNS }, () => new Array(ROWS));
    for (let row = ROWS - 1; row >= 0; row--) {
      const line = document.createElement('div');
      line.setAttribute('role', 'row');
      line.className = 'board-row';
      for (let column = 0; column < COLUMNS; column++) {
        const cell = document.createElement('div');
        cell.setAttribute('role', 'gridcell');
        cell.className = 'cell';
        cell.id = `game-cell-${column}-${row}`;
        cell.dataset.column = String(column);
        cell.dataset.row = String(row);
        cell.setAttribute('data-testid', 'game-cell');
        const disc = document.createElement('span');
        disc.className = 'disc';
        disc.setAttribute('aria-hidden', 'true');
        disc.addEventListener('animationend', () => disc.classList.remove('fresh'));
        cell.append(disc);
        line.append(cell);
        this.cells[column][row] = cell;
      }
      this.board.append(line);
    }
    const on = (id, f) => $(id).addEventListener('click', f);
    on('game-left', () => this.model?.canMove && this.actions.onLeft());
    on('game-right', () => this.model?.canMove && this.actions.onRight());
    on('game-drop', () => this.model?.canMove && this.actions.onDrop());
    on('game-ready', () => this.actions.onReady());
    on('game-join', () => this.actions.onJoin());
    on('game-leave', () => this.actions.onLeave());
    on('game-close', () => this.actions.onClose());
    this.board.addEventListener('keydown', (ev) => this._key(ev));
    // A click on a column drops there (on your turn): the mouse's shortcut for ◀ ▶ Drop.
    this.board.addEventListener('click', (ev) => {
      const cell = ev.target instanceof Element ? ev.target.closest('.cell') : null;
      if (cell && this.model?.canMove) this.actions.onDrop(Number(cell.dataset.column));
    });
    this.board.addEventListener('pointerover', (ev) => {
      const cell = ev.target instanceof Element ? ev.target.closest('.cell') : null;
      this._hover(cell ? Number(cell.dataset.column) : null);
    });
    this.board.addEventListener('pointerleave', () => this._hover(null));
  }

  _key(ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const m = this.model;
    let act = null;
    if (ev.key === 'ArrowLeft') act = () => this.actions.onLeft();
    else if (ev.key === 'ArrowRight') act = () => this.actions.onRight();
    else if (ev.key === 'Enter' || ev.key === ' ' || ev.key === 'ArrowDown') act = () => this.actions.onDrop();
    if (!act) return;
    // The keys are the board's, also while it is not your turn (no scrolling the page).
    ev.preventDefault();
    if (m?.canMove) act();
  }

  _hover(column) {
    this.hoverColumn = column;
    const active = this.model?.canMove ? column : null;
    for (let c = 0; c < COLUMNS; c++) for (const cell of this.cells[c]) cell.classList.toggle('hover', c === active);
  }

  /** Draws `model`, or hides the panel when it is null. */
  render(model) {
    this.model = model;
    this.root.hidden = !model;
    if (!model) {
      this.drawn = null;
      this.drawnKey = null;
      return;
    }
    const root = this.root;
    setAttr(root, 'data-mode', model.mode);
    setAttr(root, 'data-phase', model.phase);
    setAttr(root, 'data-my-turn', model.canMove ? 'true' : 'false');
    setAttr(root, 'data-cursor', model.cursor ?? '');
    setAttr(root, 'data-colour', model.colour ?? '');
    setText($('game-title'), model.mode === 'spectator' ? 'Connect four · watching' : 'Connect four');
    this._players(model.players);

    setText($('game-headline'), model.headline);
    setText($('game-detail'), model.detail ?? '');
    const dot = $('game-turn-dot');
    setAttr(dot, 'data-colour', model.turnColour ?? '');
    setAttr($('game-status'), 'data-outcome', model.outcome ?? null);
    setText($('game-error'), model.error ?? '');

    $('game-ready').hidden = !model.showReady;
    $('game-join').hidden = !model.showJoin;
    $('game-leave').hidden = !model.showLeave;
    $('game-close').hidden = !model.showClose;
    $('game-controls').hidden = model.mode !== 'player';
    $('game-keys').hidden = model.mode !== 'player';
    setText($('game-watch'), model.watch ?? '');
    setAttr($('game-watch'), 'title', model.watch ? 'Anyone may join this channel to watch the game' : null);
    $('game-watch').hidden = !model.watch;

    const left = $('game-left');
    const right = $('game-right');
    const drop = $('game-drop');
    left.disabled = !model.canMove || model.cursor === 0;
    right.disabled = !model.canMove || model.cursor === COLUMNS - 1;
    drop.disabled = !model.canMove;
    setAttr(drop, 'aria-label', model.canMove && model.cursor !== null ? `Drop a disc in column ${model.cursor + 1}` : null);

    // The cursor above the board: a disc of your colour over its column.
    const cursor = $('game-cursor');
    cursor.classList.toggle('shown', model.cursor !== null);
    setAttr(cursor, 'data-colour', model.colour ?? '');
    if (model.cursor !== null) cursor.style.setProperty('--col', String(model.cursor));

    this._board(model);
    this.board.classList.toggle('can-move', !!model.canMove);
    this._hover(this.hoverColumn ?? null);
  }

  _players(players) {
    const list = $('game-players');
    const want = players.map((p) => `${p.colour}:${p.name}:${p.you ? 1 : 0}:${p.waiting ? 1 : 0}`).join('|');
    if (list.dataset.drawn === want) return;
    list.dataset.drawn = want;
    const items = players.map((p) => {
        const li = document.createElement('li');
        li.className = `player ${p.colour}${p.you ? ' you' : ''}${p.waiting ? ' waiting' : ''}`;
        const disc = document.createElement('span');
        disc.className = 'mini-disc';
        disc.setAttribute('aria-hidden', 'true');
        const name = document.createElement('span');
        name.className = 'player-name';
        name.textContent = p.name;
        const colour = document.createElement('span');
        colour.className = 'visually-hidden';
        colour.textContent = `, ${p.colour}`;
        li.append(disc, name, colour);
        return li;
      });
    if (items.length === 2) {
      const vs = document.createElement('li');
      vs.className = 'vs';
      vs.setAttribute('aria-hidden', 'true');
      vs.textContent = 'vs';
      items.splice(1, 0, vs);
    }
    list.replaceChildren(...items);
  }

  _board(model) {
    const same = this.drawnKey === model.key && this.drawn;
    const winning = new Set((model.line ?? []).map(([c, r]) => `${c},${r}`));
    const last = model.lastMove;
    for (let column = 0; column < COLUMNS; column++) {
      for (let row = 0; row < ROWS; row++) {
        const cell = this.cells[column][row];
        const who = model.board[column][row];
        const colour = COLOUR[who] ?? 'empty';
        const win = winning.has(`${column},${row}`);
        const isLast = !!last && last.column === column && last.row === row && who !== 0;
        setAttr(cell, 'data-disc', colour);
        setAttr(cell, 'data-winning', win ? 'true' : null);
        setAttr(cell, 'data-last', isLast ? 'true' : null);
        setAttr(cell, 'aria-label', `column ${column + 1}, row ${row + 1}, ${colour}${win ? ', in the winning four' : ''}${isLast ? ', last move' : ''}`);
        // A disc new since the last drawing falls from above the board.
        if (same && who !== 0 && this.drawn[column][row] === 0) {
          const disc = cell.firstElementChild;
          disc.style.setProperty('--fall', String(ROWS - row));
          disc.classList.remove('fresh');
          void disc.offsetWidth;
          disc.classList.add('fresh');
        }
      }
    }
    this.drawn = model.board.map((col) => col.slice());
    this.drawnKey = model.key;
    // For a screen reader, the board's "current" cell is where your disc would land.
    let active = null;
    if (model.cursor !== null) {
      const row = landingRow(model.board, model.cursor);
      active = `game-cell-${model.cursor}-${row < 0 ? ROWS - 1 : row}`;
    }
    setAttr(this.board, 'aria-activedescendant', active);
    for (let column = 0; column < COLUMNS; column++) {
      for (let row = 0; row < ROWS; row++) this.cells[column][row].classList.toggle('target', active === this.cells[column][row].id);
    }
  }
}
