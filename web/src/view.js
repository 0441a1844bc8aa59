// The page: draws the client's state into the DOM and turns clicks and keys
// into client calls. Lists are updated in place by key (never rebuilt), so
// focus, scrolling and the aria-live log behave. Message text is only ever
// set as textContent: nothing from the network becomes markup.

import { GamePanel } from './game_panel.js';
import { colourOf, parseRecord, recordWords, replayRecords, spectatorWords } from './game.js';

import { $, el, setAttr, setText } from './dom.js';

/** Reorders, adds and removes children to match `items`, keeping nodes by key. */
function syncList(parent, items, keyOf, create, update) {
  const existing = new Map();
  for (const child of [...parent.children]) existing.set(child.dataset.key, child);
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    let node = existing.get(key);
    if (node) existing.delete(key);
    else {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    const want = prev ? prev.nextElementSibling : parent.firstElementChild;
    if (node !== want) parent.insertBefore(node, want);
    prev = node;
  }
  for (const node of existing.values()) node.remove();
}

/** An unread badge: see View._badge. */
const badge = () =>
  el('span', { class: 'badge', 'data-testid': 'unread-badge', hidden: true }, el('span', { 'aria-hidden': 'true' }), el('span', { class: 'visually-hidden' }));

const displayChannel = (name) => `#${name.replace(/^#+/, '')}`;

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function timeOf(secs) {
  const d = new Date(secs * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === now.toDateString() ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

const STATE_TEXT = {
  sending: { mark: '…', label: 'Sending' },
  queued: { mark: '⏸', label: 'Waiting for the channel to elect a leader; it will be sent then' },
  pending: { mark: '○', label: 'Pending: not yet confirmed by the channel' },
  committed: { mark: '✓', label: 'Committed: stored by the channel' },
  failed: { mark: '!', label: 'Not sent' },
  sent: { mark: '✓', label: 'Sent' },
  delivered: { mark: '✓✓', label: 'Delivered' },
  received: { mark: '', label: '' },
};

export class View {
  /**
   * @param {{onSend(text): void, onSelect(kind, id): void, onCreate(name): string|null,
   *          onJoin(name): string|null, onLeave(id): void, onRefresh(): void, onRetry(kind, conv, msg): void,
   *          onReconnect(): void, onSignOut(): void, onRemember(on: boolean): void,
   *          onCredFile(file: File, remember: boolean): void, onLink(text: string, remember: boolean): void,
   *          onPlayGame(userId): void, onGame(userId, type, fields?): void, onShowGame(userId, shown): void}} actions
   */
  constructor(actions) {
    this.actions = actions;
    this.client = null;
    this.shownConv = null;
    this.lastCount = 0;
    this.hiddenNew = 0;
    /** Notice id → the timer that dismisses it. */
    this.noticeTimers = new Map();
    /** While set, the message log is rebuilt for another conversation and not announced. */
    this.quietTimer = null;
    /** Spectated games (channels) the person hid, by conversation key. */
    this.hiddenGames = new Set();
    this._wireSignin();
    this._wireApp();
    this._wireGame();
  }

  // ---- connect four ------------------------------------------------------------

  _wireGame() {
    /** The bot of the open private conversation, for the panel's buttons. */
    const bot = () => {
      const cur = this.client?.chat.current;
      return cur && cur.kind === 'user' ? cur.id : null;
    };
    const ask = (type, fields) => {
      const id = bot();
      if (id) this.actions.onGame(id, type, fields);
    };
    this.gamePanel = new GamePanel({
      onLeft: () => ask('left'),
      onRight: () => ask('right'),
      onDrop: (column) => ask('drop', column === undefined ? {} : { column }),
      onReady: () => ask('ready'),
      onJoin: () => {
        ask('join');
        $('game-board').focus();
      },
      onLeave: () => ask('leave'),
      onClose: () => {
        const cur = this.client?.chat.current;
        if (!cur) return;
        if (cur.kind === 'user') this.actions.onShowGame(cur.id, false);
        else this.hiddenGames.add(`${cur.kind}:${cur.id}`);
        this.render();
        $('game-open').focus();
      },
    });
    $('game-open').addEventListener('click', () => {
      const cur = this.client?.chat.current;
      if (!cur) return;
      if (cur.kind === 'user') {
        const g = this.client.chat.gameWith(cur.id);
        if (g && (g.seated || g.phase === 'joining')) this.actions.onShowGame(cur.id, true);
        else this.actions.onPlayGame(cur.id);
      } else {
        this.hiddenGames.delete(`${cur.kind}:${cur.id}`);
        this.render();
      }
      // The board takes the keys from here on (its buttons follow it).
      requestAnimationFrame(() => $('game-board').focus());
    });
  }

  /** The game shown with the open conversation, as the panel draws it, or null. */
  _gameModel(chat, cur) {
    if (!cur) return null;
    const key = `${cur.kind}:${cur.id}`;
    if (cur.kind === 'channel') {
      const c = chat.channels.get(cur.id);
      if (!c || this.hiddenGames.has(key)) return null;
      const g = replayRecords(c.messages.order.map((m) => m.text));
      if (!g) return null;
      const { headline, detail } = spectatorWords(g);
      return {
        mode: 'spectator',
        key,
        phase: g.over ? 'over' : 'playing',
        players: [
          { name: g.red, colour: 'red' },
          { name: g.yellow, colour: 'yellow' },
        ],
        headline,
        detail,
        error: null,
        board: g.board,
        line: g.line,
        lastMove: g.lastMove,
        cursor: null,
        colour: null,
        turnColour: g.over ? (g.over.winner ? colourOf(g.over.winner) : null) : colourOf(g.turn),
        outcome: g.over ? g.over.reason : null,
        canMove: false,
        showReady: false,
        showJoin: false,
        showLeave: false,
        showClose: true,
      };
    }
    const g = chat.gameWith(cur.id);
    if (!g || !g.shown) return null;
    const online = chat.connected && !!chat.users.get(cur.id)?.online;
    const players = [];
    if (g.player) {
      const them = g.player === 1 ? 2 : 1;
      players[g.player - 1] = { name: `${chat.me.name} (you)`, colour: colourOf(g.player), you: true };
      players[them - 1] = { name: g.opponent ?? (g.phase === 'waiting' ? 'waiting for a player…' : 'the other player'), colour: colourOf(them), waiting: !g.opponent };
    }
    let error = g.error;
    if (!error && !online && (g.seated || g.phase === 'joining')) {
      error = chat.connected ? `${g.bot} is offline: the game waits until it is back.` : 'You are offline: the game goes on when the connection is back.';
    }
    const over = g.phase === 'over';
    return {
      mode: 'player',
      key,
      phase: g.phase,
      players,
      headline: g.headline(),
      detail: g.detail(),
      error,
      board: g.board,
      line: g.line,
      lastMove: g.lastMove,
      cursor: g.myTurn ? g.cursor : null,
      colour: colourOf(g.player),
      turnColour: g.phase === 'playing' ? colourOf(g.turn) : over && g.outcome?.winner ? colourOf(g.outcome.winner) : null,
      outcome: over ? (g.outcome?.winner && g.outcome.winner === g.player ? 'won' : g.outcome?.winner ? 'lost' : g.outcome?.reason ?? null) : null,
      canMove: g.canMove && online,
      showReady: g.canReady && online,
      showJoin: g.canJoin && online,
      showLeave: g.seated,
      showClose: !g.seated,
      watch: g.channel && (g.seated || over) ? `Spectators: #${g.channel}` : null,
    };
  }

  /** The panel, the header's Play button, and the layout around them. */
  _renderGame(chat, cur) {
    const model = this._gameModel(chat, cur);
    this.gamePanel.render(model);
    document.querySelector('.conversation').classList.toggle('has-game', !!model);
    const open = $('game-open');
    // [verb, the rest]: phones show the verb only (the whole is the button's name).
    let label = null;
    if (!model && cur?.kind === 'user') {
      const g = chat.gameWith(cur.id);
      label = g && (g.seated || g.phase === 'joining') ? ['Show', ' the game'] : ['Play', ' connect four'];
      const online = chat.connected && !!chat.users.get(cur.id)?.online;
      open.disabled = !online;
      setAttr(open, 'title', online ? `Ask ${chat.nameOf(cur.id)} (a connect-four bot) for a game` : `${chat.nameOf(cur.id)} is offline`);
    } else if (!model && cur?.kind === 'channel') {
      const c = chat.channels.get(cur.id);
      if (this.hiddenGames.has(`channel:${cur.id}`) && c && replayRecords(c.messages.order.map((m) => m.text))) label = ['Show', ' the game'];
      open.disabled = false;
      setAttr(open, 'title', null);
    }
    open.hidden = label === null;
    setText($('game-open-text'), label?.[0] ?? '');
    setText($('game-open-more'), label?.[1] ?? '');
    setAttr(open, 'aria-label', label ? label.join('') : null);
  }

  // ---- sign-in ---------------------------------------------------------------

  _wireSignin() {
    const remember = () => $('remember').checked;
    $('cred-file').addEventListener('change', (ev) => {
      const file = ev.target.files && ev.target.files[0];
      if (file) this.actions.onCredFile(file, remember());
      ev.target.value = '';
    });
    $('link-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.actions.onLink($('link-input').value, remember());
    });
    const zone = $('dropzone');
    zone.addEventListener('dragover', (ev) => {
      ev.preventDefault();
      zone.classList.add('dragging');
    });
    zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
    zone.addEventListener('drop', (ev) => {
      ev.preventDefault();
      zone.classList.remove('dragging');
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      if (file) this.actions.onCredFile(file, remember());
      else this.showSignin('Drop the .cred file itself (not its text).');
    });
    // A file dropped anywhere else must not make the browser navigate away.
    window.addEventListener('dragover', (ev) => ev.preventDefault());
    window.addEventListener('drop', (ev) => ev.preventDefault());
  }

  /** Empties the sign-in form: a pasted link is the key itself, and must not stay on screen. */
  _clearSigninForm() {
    $('link-input').value = '';
    $('cred-file').value = '';
    $('remember').checked = false;
  }

  /** Drops the notices on screen and their timers: a new session numbers its notices afresh. */
  _clearNotices() {
    for (const t of this.noticeTimers.values()) clearTimeout(t);
    this.noticeTimers.clear();
    $('notices').replaceChildren();
  }

  showSignin(error = null) {
    this.client = null;
    this.shownConv = null;
    this._clearNotices();
    this._clearSigninForm();
    $('app').hidden = true;
    $('skip-link').hidden = true;
    $('signin').hidden = false;
    const box = $('signin-error');
    box.hidden = !error;
    box.textContent = error ?? '';
    document.title = 'Sign in · sigil';
    $('cred-file').focus();
  }

  showApp(client, remembered) {
    this.client = client;
    this._clearNotices();
    this._clearSigninForm();
    $('signin').hidden = true;
    $('app').hidden = false;
    $('skip-link').hidden = false;
    this.setRemembered(remembered);
    $('messages').replaceChildren();
    this.shownConv = null;
    this.render();
    $('composer-input').focus();
  }

  /** The "Remember" box of the signed-in page. */
  setRemembered(on) {
    $('remember-device').checked = on;
  }

  // ---- the app ---------------------------------------------------------------

  _wireApp() {
    const input = $('composer-input');
    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._send();
    });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this._send();
      }
    });
    input.addEventListener('input', () => this._autosize());
    $('sign-out').addEventListener('click', () => this.actions.onSignOut());
    $('reconnect').addEventListener('click', () => this.actions.onReconnect());
    $('remember-device').addEventListener('change', (ev) => this.actions.onRemember(ev.target.checked));
    $('leave').addEventListener('click', () => {
      const cur = this.client?.chat.current;
      if (cur && cur.kind === 'channel') this.actions.onLeave(cur.id);
    });

    // The sidebar is a drawer on small screens.
    const menu = $('menu-button');
    menu.addEventListener('click', () => this._drawer(!document.body.classList.contains('drawer-open')));
    $('scrim').addEventListener('click', () => this._drawer(false));
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && document.body.classList.contains('drawer-open')) this._drawer(false);
    });

    // Dialogs: create and join.
    for (const d of document.querySelectorAll('dialog')) {
      d.addEventListener('click', (ev) => {
        if (ev.target instanceof HTMLElement && ev.target.hasAttribute('data-close')) d.close();
      });
    }
    $('create-open').addEventListener('click', () => {
      $('create-error').hidden = true;
      $('create-name').value = '';
      $('create-dialog').showModal();
    });
    $('create-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const problem = this.actions.onCreate($('create-name').value);
      if (problem) {
        $('create-error').textContent = problem;
        $('create-error').hidden = false;
      } else {
        $('create-dialog').close();
        this._drawer(false);
      }
    });
    $('join-open').addEventListener('click', () => {
      $('join-error').hidden = true;
      $('join-name').value = '';
      this.actions.onRefresh();
      this._renderDirectory();
      $('join-dialog').showModal();
    });
    $('join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._join($('join-name').value);
    });
    $('join-name').addEventListener('input', () => this._renderDirectory());
    $('directory-refresh').addEventListener('click', () => this.actions.onRefresh());

    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.hiddenNew = 0;
        this.client?.chat.markRead();
        this.render();
      }
    });
  }

  _drawer(open) {
    document.body.classList.toggle('drawer-open', open);
    $('menu-button').setAttribute('aria-expanded', String(open));
    $('scrim').hidden = !open;
    if (open) $('sidebar').querySelector('button')?.focus();
  }

  _join(name) {
    if (!name.trim()) return;
    const problem = this.actions.onJoin(name);
    if (problem) {
      $('join-error').textContent = problem;
      $('join-error').hidden = false;
    } else {
      $('join-dialog').close();
      this._drawer(false);
    }
  }

  _send() {
    const input = $('composer-input');
    const text = input.value;
    if (!text.trim() || !this.client) return;
    const problem = this.client.chat.checkText(text);
    if (problem) {
      this._hint(problem, true);
      return;
    }
    this.actions.onSend(text);
    input.value = '';
    this._autosize();
    this._hint(null);
    this.stickToBottom = true;
  }

  _hint(text, isError = false) {
    const hint = $('composer-hint');
    hint.textContent = text ?? 'Enter to send · Shift+Enter for a new line';
    hint.classList.toggle('error', isError);
  }

  _autosize() {
    const input = $('composer-input');
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  /** Redraws from the client's state; cheap when little changed. */
  render() {
    const client = this.client;
    if (!client) return;
    const chat = client.chat;
    this._renderStatus(client);
    setText($('me-name'), chat.me.name);
    setText($('server-name'), chat.server?.serverName ?? 'sigil');
    this._renderChannels(chat);
    this._renderPeople(chat);
    this._renderConversation(chat);
    this._renderNotices(chat);
    if ($('join-dialog').open) this._renderDirectory();
    const unread = [...chat.channels.values(), ...chat.conversations.values()].reduce((n, c) => n + c.unread, 0) + this.hiddenNew;
    const title = `${unread ? `(${unread}) ` : ''}${chat.server?.serverName ?? 'sigil'}`;
    if (document.title !== title) document.title = title;
  }

  _renderStatus(client) {
    const status = $('status');
    const state = client.state;
    setAttr(status, 'data-state', state);
    let text;
    let countdown = '';
    let banner = null;
    if (state === 'connected') text = 'Connected';
    else if (state === 'connecting') text = client.sessions ? 'Reconnecting…' : 'Connecting…';
    else if (client.final || client.stopped) text = 'Offline';
    else {
      text = 'Offline — reconnecting';
      // The seconds tick outside the live region: only changes of state are announced.
      const secs = client.retryAt ? Math.max(0, Math.ceil((client.retryAt - Date.now()) / 1000)) : 0;
      countdown = ` in ${secs}s`;
    }
    setText($('status-text'), text);
    setText($('status-countdown'), countdown);
    if (state !== 'connected' && client.problem) banner = client.problem;
    else if (state === 'offline' && !client.stopped) banner = 'You are offline. Messages you write are sent when the connection is back.';
    $('banner').hidden = !banner;
    setText($('banner-text'), banner ?? '');
    $('reconnect').hidden = state !== 'offline';
    setText($('reconnect'), client.final ? 'Reconnect here' : 'Reconnect now');
  }

  _renderChannels(chat) {
    const list = [...chat.channels.values()].sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
    $('no-channels').hidden = list.length > 0;
    syncList(
      $('channel-list'),
      list,
      (c) => c.id,
      (c) => {
        const button = el('button', { type: 'button', class: 'side-item' }, el('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }), el('span', { class: 'label' }), badge());
        button.addEventListener('click', () => this._select('channel', c.id));
        return el('li', { 'data-testid': 'channel-item' }, button);
      },
      (li, c) => {
        const current = chat.current?.kind === 'channel' && chat.current.id === c.id;
        setAttr(li, 'data-channel', c.name);
        setAttr(li, 'data-unread', c.unread);
        const button = li.firstElementChild;
        setAttr(button, 'aria-current', current ? 'page' : null);
        setText(button.querySelector('.label'), c.name.replace(/^#+/, ''));
        this._badge(button.querySelector('.badge'), c.unread);
        button.classList.toggle('unread', c.unread > 0);
      },
    );
  }

  /** An unread count: the number for the eye, words for a screen reader (aria-label on a span is not read). */
  _badge(node, n) {
    node.hidden = n === 0;
    setText(node.firstElementChild, n ? (n > 99 ? '99+' : String(n)) : '');
    setText(node.lastElementChild, n ? `, ${n} unread` : '');
  }

  _renderPeople(chat) {
    const people = [...chat.users.values()]
      .filter((u) => u.id !== chat.me.id && u.name)
      .sort((a, b) => Number(b.online) - Number(a.online) || a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
    $('no-people').hidden = people.length > 0;
    syncList(
      $('people-list'),
      people,
      (u) => u.id,
      (u) => {
        const button = el('button', { type: 'button', class: 'side-item' }, el('span', { class: 'presence', 'aria-hidden': 'true' }), el('span', { class: 'label' }), el('span', { class: 'visually-hidden presence-text' }), badge());
        button.addEventListener('click', () => this._select('user', u.id));
        return el('li', { 'data-testid': 'user-item' }, button);
      },
      (li, u) => {
        const conv = chat.conversations.get(u.id);
        const current = chat.current?.kind === 'user' && chat.current.id === u.id;
        setAttr(li, 'data-user', u.name);
        setAttr(li, 'data-online', u.online ? 'true' : 'false');
        const button = li.firstElementChild;
        setAttr(button, 'aria-current', current ? 'page' : null);
        button.classList.toggle('offline', !u.online);
        setText(button.querySelector('.label'), u.name);
        setText(button.querySelector('.presence-text'), u.online ? ', online' : ', offline');
        this._badge(button.querySelector('.badge'), conv?.unread ?? 0);
      },
    );
  }

  _select(kind, id) {
    this.actions.onSelect(kind, id);
    this._drawer(false);
    // On a phone the keyboard would cover the messages: focus the composer only on wide screens.
    if (window.matchMedia('(min-width: 700px)').matches) $('composer-input').focus();
  }

  _renderConversation(chat) {
    const cur = chat.current;
    const key = cur ? `${cur.kind}:${cur.id}` : null;
    const switched = key !== this.shownConv;
    const list = $('messages');
    if (switched) {
      // Another conversation: its whole history is drawn at once, which is no news to
      // announce. The log is not live until it settled.
      this._quiet();
      list.replaceChildren();
      this.shownConv = key;
      this.lastCount = 0;
      this._hint(null);
    }
    const input = $('composer-input');
    const leader = $('leader');
    const leave = $('leave');
    let messages = [];
    let placeholder = 'Message';
    let canWrite = !!cur;
    let empty = null;
    if (!cur) {
      setText($('conv-title'), 'Welcome');
      setText($('conv-sub'), '');
      leader.hidden = true;
      leave.hidden = true;
      empty = 'Create a channel with +, join one with ⌕, or pick a person to write to.';
      canWrite = false;
    } else if (cur.kind === 'channel') {
      const c = chat.channels.get(cur.id);
      messages = c ? c.messages.order : [];
      const name = displayChannel(c?.name ?? '');
      setText($('conv-title'), name);
      setText($('conv-sub'), c ? `${c.online} online${c.status === 'healthy' ? '' : ' · no leader yet'}` : '');
      leader.hidden = false;
      leave.hidden = false;
      const leaderName = c?.leader ? chat.nameOf(c.leader) : '';
      setAttr(leader, 'data-leader', leaderName);
      setAttr(leader, 'data-term', c ? c.election.toString() : '0');
      setText(leader, c?.leader ? `led by ${leaderName} · term ${c.election}` : c?.candidate ? `electing ${chat.nameOf(c.candidate)}…` : 'electing a leader…');
      setAttr(leader, 'title', 'The leader confirms (commits) messages for the channel; the term counts elections');
      placeholder = `Message ${name}`;
      if (!messages.length) empty = c && !c.historyLoaded && chat.connected ? 'Loading history…' : `This is the start of ${name}.`;
    } else {
      const u = chat.users.get(cur.id);
      const name = chat.nameOf(cur.id);
      messages = chat.conversations.get(cur.id)?.messages.order ?? [];
      setText($('conv-title'), name);
      setText($('conv-sub'), u?.online ? 'online · private conversation' : 'offline · private conversation');
      leader.hidden = true;
      leave.hidden = true;
      if (!u?.online) {
        canWrite = false;
        placeholder = `${name} is offline: private messages reach only people who are online`;
      } else {
        placeholder = `Message ${name}`;
      }
      if (!messages.length) empty = `Private messages with ${name} are kept only while this page is open.`;
    }
    this._renderGame(chat, cur);
    // Game messages are shown as a line in words, or not at all when the panel says it all.
    messages = messages.filter((m) => !m.game || m.game.text || m.state === 'failed');
    setAttr(input, 'placeholder', placeholder);
    setText($('composer-label'), placeholder);
    input.disabled = !canWrite;
    $('send').disabled = !canWrite;
    $('empty').hidden = !empty;
    setText($('empty'), empty ?? '');

    // Follow the conversation when the reader is at the bottom (or just wrote).
    const scroller = $('scroller');
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    let prev = null;
    syncList(
      list,
      messages,
      (m) => m.id,
      (m) => this._createMessage(m, cur),
      (li, m) => {
        // Consecutive messages of one sender within five minutes are grouped.
        const grouped = prev && !prev.game && !m.game && prev.from === m.from && m.timestamp - prev.timestamp < 300;
        this._updateMessage(li, m, chat, grouped);
        prev = m;
      },
    );
    if (messages.length > this.lastCount && document.hidden && !switched) this.hiddenNew += messages.length - this.lastCount;
    this.lastCount = messages.length;
    // A channel's first page of history is no news either.
    const loading = cur?.kind === 'channel' && chat.channels.get(cur.id)?.historyLoaded === false;
    // Not live rather than aria-busy: clearing aria-busy can make a screen reader read it all.
    setAttr(list, 'aria-live', this.quietTimer !== null || loading ? 'off' : 'polite');
    if (switched || atBottom || this.stickToBottom) {
      scroller.scrollTop = scroller.scrollHeight;
      this.stickToBottom = false;
    }
    if (!document.hidden) chat.markRead();
  }

  /** Keeps the message log quiet for a moment (see _renderConversation). */
  _quiet() {
    if (this.quietTimer !== null) clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => {
      this.quietTimer = null;
      this.render();
    }, 500);
  }

  _createMessage(m, cur) {
    const retry = el('button', { type: 'button', class: 'btn btn-small retry', text: 'Retry', 'data-testid': 'retry' });
    retry.addEventListener('click', () => this.actions.onRetry(cur.kind, cur.id, m.id));
    return el(
      'li',
      { class: 'msg', 'data-testid': 'message', 'data-msg-id': m.id },
      el('div', { class: 'avatar', 'aria-hidden': 'true' }),
      el(
        'div',
        { class: 'msg-main' },
        el('div', { class: 'msg-head' }, el('span', { class: 'sender' }), el('time', { class: 'time' })),
        el('div', { class: 'body' }),
        el(
          'div',
          { class: 'msg-foot' },
          el('span', { class: 'mark', 'data-testid': 'message-mark' }, el('span', { 'aria-hidden': 'true' }), el('span', { class: 'visually-hidden' })),
          el('span', { class: 'error' }),
          retry,
        ),
      ),
    );
  }

  _updateMessage(li, m, chat, grouped) {
    const name = m.mine ? chat.me.name : chat.nameOf(m.from);
    li.classList.toggle('mine', m.mine);
    li.classList.toggle('grouped', !!grouped);
    li.classList.toggle('failed', m.state === 'failed');
    setAttr(li, 'data-from', name);
    if (m.kind === 'channel') {
      setAttr(li, 'data-state', m.state === 'committed' ? 'committed' : 'pending');
      setAttr(li, 'data-failed', m.state === 'failed' ? 'true' : null);
    } else {
      setAttr(li, 'data-delivered', m.delivered ? 'true' : 'false');
    }
    const avatar = li.querySelector('.avatar');
    setText(avatar, name.slice(0, 1).toUpperCase());
    avatar.style.setProperty('--hue', String(hue(name)));
    setText(li.querySelector('.sender'), name);
    const time = li.querySelector('.time');
    setText(time, timeOf(m.timestamp));
    setAttr(time, 'datetime', new Date(m.timestamp * 1000).toISOString());
    setAttr(time, 'title', new Date(m.timestamp * 1000).toLocaleString());
    // A game message in words; a game channel's record line with its bracketed part quieter.
    const record = m.kind === 'channel' && parseRecord(m.text);
    li.classList.toggle('game-line', !!m.game);
    li.classList.toggle('record', !!record);
    setAttr(li, 'data-game', m.game ? m.game.type : null);
    const body = li.querySelector('.body');
    if (m.game) setText(body, m.game.text ?? `Game request (${m.game.type}) not sent`);
    else if (record) this._recordBody(body, m.text);
    else setText(body, m.text);
    body.classList.toggle('binary', !!m.binary);
    const mark = li.querySelector('.mark');
    const showMark = m.kind === 'channel' || m.mine;
    const s = STATE_TEXT[m.state] ?? STATE_TEXT.received;
    const shown = showMark && s.label !== '';
    mark.hidden = !shown;
    // The symbol for the eye; the words, visually hidden, for a screen reader.
    setText(mark.firstElementChild, shown ? `${s.mark} ${m.kind === 'channel' && m.state === 'pending' ? 'pending' : m.state === 'queued' ? 'waiting for a leader' : ''}`.trim() : '');
    setText(mark.lastElementChild, shown ? s.label : '');
    setAttr(mark, 'title', shown ? s.label : null);
    setAttr(mark, 'data-state', m.state);
    setText(li.querySelector('.error'), m.state === 'failed' ? m.error ?? 'Not sent.' : '');
    li.querySelector('.retry').hidden = m.state !== 'failed' || !m.mine || !!m.game;
  }

  /** A record line: its words, then its machine-readable part, quieter (the text stays whole). */
  _recordBody(body, text) {
    if (body.dataset.record === text) return;
    body.dataset.record = text;
    const words = document.createElement('span');
    words.className = 'record-words';
    words.textContent = recordWords(text);
    const code = document.createElement('code');
    code.className = 'record-code';
    code.textContent = text.slice(0, text.indexOf(']') + 1);
    body.replaceChildren(code, ' ', words);
  }

  _renderNotices(chat) {
    syncList(
      $('notices'),
      chat.notices,
      (n) => String(n.id),
      (n) => {
        const close = el('button', { type: 'button', class: 'icon-btn', title: 'Dismiss' }, el('span', { 'aria-hidden': 'true', text: '×' }), el('span', { class: 'visually-hidden', text: 'Dismiss' }));
        const dismiss = () => {
          chat.dismissNotice(n.id);
          this.render();
        };
        close.addEventListener('click', dismiss);
        // Notices fade on their own; errors stay a little longer.
        this.noticeTimers.set(n.id, setTimeout(dismiss, n.level === 'error' ? 10_000 : 5000));
        // No role of its own: the container is the live region (one announcement, not two).
        return el('div', { class: `notice ${n.level}`, 'data-testid': 'notice' }, el('span', { text: n.text }), close);
      },
      () => {},
    );
    // A notice gone (dismissed, or pushed out by newer ones) needs its timer no more.
    const live = new Set(chat.notices.map((n) => n.id));
    for (const [id, t] of this.noticeTimers) {
      if (!live.has(id)) {
        clearTimeout(t);
        this.noticeTimers.delete(id);
      }
    }
  }

  _renderDirectory() {
    const chat = this.client?.chat;
    if (!chat) return;
    const filter = $('join-name').value.trim().replace(/^#+/, '').toLowerCase();
    const all = [...chat.directory.values()].sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
    syncList($('join-options'), all, (c) => c.id, (c) => el('option', { value: c.name }), () => {});
    const shown = all.filter((c) => !filter || c.name.toLowerCase().includes(filter));
    syncList(
      $('directory'),
      shown.length ? shown : [{ id: '', name: '' }],
      (c) => c.id || 'empty',
      (c) => {
        if (!c.id) return el('li', { class: 'side-empty', text: chat.directory.size ? 'No channel matches.' : 'No channels yet: create the first one.' });
        const button = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'join-channel-option' });
        button.addEventListener('click', () => this._join(c.id));
        return el('li', { 'data-channel': c.name }, el('span', { class: 'dir-name', text: displayChannel(c.name) }), el('span', { class: 'dir-status' }), button);
      },
      (li, c) => {
        if (!c.id) return;
        const member = chat.channels.has(c.id);
        setText(li.querySelector('.dir-status'), c.leader ? `led by ${chat.nameOf(c.leader)}` : 'no leader');
        setText(li.querySelector('button'), member ? 'Open' : 'Join');
        setAttr(li.querySelector('button'), 'aria-label', `${member ? 'Open' : 'Join'} ${displayChannel(c.name)}`);
      },
    );
  }
}
