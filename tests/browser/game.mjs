// Connect four in the browser: the referee bot (`sigil game serve`) runs;
// carol opens a private conversation with it and presses Play; dave plays
// from the terminal (`sigil game play --plain`). Carol moves the cursor and
// drops (with the buttons, once with the keys), and may not while it is
// dave's turn; she stacks a column and wins. The conversation stays
// readable (the game's messages in words, no JSON). Erin then joins the
// game's channel by name and watches the record, committed, as a board.

import {
  Server,
  GameBot,
  GamePlayer,
  launchBrowser,
  person,
  seen,
  until,
  screenshot,
  tempDir,
  cleanup,
  fail,
} from "./lib.mjs";

const dir = tempDir();
const server = new Server(dir);
const accounts = Object.fromEntries(["connect4", "carol", "dave", "erin"].map((n) => [n, server.addAccount(n)]));
let browser;
let bot;
let dave;

const panel = "[data-testid=game-panel]";
/** Screenshots of the board at rest: falling discs landed, the drawer's slide done. */
const still = { animations: "disabled" };
const cell = (column, row) => `[data-testid=game-cell][data-column="${column}"][data-row="${row}"]`;

async function signIn(name, viewport) {
  const p = await person(browser, name, viewport);
  await p.page.goto(server.link(accounts[name]));
  await seen(p.page, "[data-testid=connection-status][data-state=connected]", `${name} connected`);
  return p;
}

/** Whether the panel's Left, Right and Drop buttons are disabled, as a string like "true true true". */
async function moveButtonsDisabled(page) {
  const states = [];
  for (const id of ["game-left", "game-right", "game-drop"]) states.push(await page.isDisabled(`[data-testid=${id}]`));
  return states.join(" ");
}

try {
  await server.start();
  browser = await launchBrowser();

  bot = new GameBot(server, accounts.connect4);
  await bot.waitFor("refereeing connect four", "the bot started");

  // Carol: a private conversation with the bot, and Play.
  const carol = await signIn("carol");
  await seen(carol.page, "[data-testid=user-item][data-user=connect4][data-online=true]", "carol sees the bot online");
  await carol.page.click("[data-testid=user-item][data-user=connect4] button");
  await seen(carol.page, "[data-testid=game-play]:has-text('Play connect four')", "the Play button in the conversation's header");
  await carol.page.click("[data-testid=game-play]");
  await seen(carol.page, `${panel}[data-phase=waiting]`, "carol is seated, waiting for a second player");
  await seen(carol.page, "[data-testid=game-status]:has-text('Waiting for another player')", "the waiting status in words");
  if ((await moveButtonsDisabled(carol.page)) !== "true true true") fail("the move buttons are active before the game");

  // Dave: the terminal player joins at start, and the game begins; red (carol) moves first.
  dave = new GamePlayer(server, accounts.dave);
  const joined = await dave.expect("joined game", "dave's seat");
  if (!joined.includes("as player 2")) fail(`dave should be player 2: ${joined}`);
  const game = joined.split(/\s+/)[2];
  await dave.expect("game start: you are yellow (player 2) against carol");
  await seen(carol.page, `${panel}[data-phase=playing][data-my-turn=true][data-colour=red]`, "carol's first turn");
  await seen(carol.page, "[data-testid=game-status]:has-text('Your turn')", "'Your turn' in words");
  await seen(carol.page, `${panel} .player.yellow:has-text('dave')`, "dave named as the yellow player");

  // Carol stacks column 3 (cursor from the middle, one left, then Drop); dave answers in column 1.
  for (let turn = 0; turn < 4; turn++) {
    await seen(carol.page, `${panel}[data-my-turn=true][data-cursor="3"]`, `turn ${turn + 1}: the cursor in the middle`);
    if (turn === 2) await screenshot(carol.page, "board-mid-game", still);
    if (turn === 2) {
      // This time with the keys, on the focused board.
      await carol.page.focus("[data-testid=game-board]");
      await carol.page.keyboard.press("ArrowLeft");
      await seen(carol.page, `${panel}[data-cursor="2"]`, "the cursor moved by the arrow key");
      await carol.page.keyboard.press("Enter");
    } else {
      await carol.page.click("[data-testid=game-left]");
      await seen(carol.page, `${panel}[data-cursor="2"]`, `turn ${turn + 1}: the cursor moved left`);
      await carol.page.click("[data-testid=game-drop]");
    }
    await seen(carol.page, `${cell(2, turn)}[data-disc=red]`, `carol's disc ${turn + 1} in column 3`);
    await dave.expect("carol dropped in column 3");
    if (turn === 3) break;
    // Dave's turn: carol's buttons are off, and the status says whose turn it is.
    await seen(carol.page, `${panel}[data-my-turn=false]`, "not carol's turn");
    await seen(carol.page, "[data-testid=game-status]:has-text(\"dave's turn\")", "'dave's turn' in words");
    const disabled = await moveButtonsDisabled(carol.page);
    if (disabled !== "true true true") fail(`Left, Right and Drop must be disabled on dave's turn (${disabled})`);
    await dave.expect("your move");
    dave.say("drop 1");
    await dave.expect("move received");
    await seen(carol.page, `${cell(0, turn)}[data-disc=yellow]`, `dave's disc ${turn + 1} in column 1`);
  }

  // Four in a row: carol wins, in words, the four highlighted; dave is told too.
  await seen(carol.page, `${panel}[data-phase=over]`, "the game is over");
  await seen(carol.page, "[data-testid=game-status]:has-text('You win!')", "'You win!'");
  await until(carol.page, "the winning four highlighted", () => document.querySelectorAll("[data-testid=game-cell][data-winning=true][data-disc=red]").length === 4);
  await dave.expect("game over: carol wins");
  await seen(carol.page, "[data-testid=game-ready]", "Play again offered");
  if ((await moveButtonsDisabled(carol.page)) !== "true true true") fail("the move buttons are active after the game");
  const label = await carol.page.getAttribute(cell(2, 3), "aria-label");
  if (label !== "column 3, row 4, red, in the winning four, last move") fail(`a cell's label: ${label}`);

  // The conversation stays readable: the game's events in words, no JSON.
  await seen(carol.page, "[data-testid=message][data-game=game_start]:has-text('Game on: you are red against dave')", "the start in words");
  await seen(carol.page, "[data-testid=message][data-game=game_over]:has-text('You win!')", "the end in words");
  const raw = await carol.page.$$eval("[data-testid=message] .body", (bodies) => bodies.map((b) => b.textContent).filter((t) => t.trim().startsWith("{")));
  if (raw.length) fail(`raw game messages in the conversation: ${raw.join(" | ")}`);
  await screenshot(carol.page, "game-over", still);
  await carol.page.emulateMedia({ colorScheme: "dark" });
  await screenshot(carol.page, "game-over-dark", still);
  await carol.page.emulateMedia({ colorScheme: "light" });
  await carol.page.setViewportSize({ width: 390, height: 844 });
  await seen(carol.page, `${panel}[data-phase=over]`, "the game on a phone-sized screen");
  await screenshot(carol.page, "game-over-phone", still);
  await carol.page.setViewportSize({ width: 1200, height: 780 });

  // Erin watches: joins the game's channel by name and sees its record, committed.
  const channel = `c4-${game}`;
  const erin = await signIn("erin");
  await erin.page.click("[data-testid=join-channel]");
  await erin.page.fill("[data-testid=join-channel-name]", channel);
  await erin.page.click("[data-testid=join-channel-submit]");
  await seen(erin.page, `[data-testid=channel-item][data-channel$="${channel}"]`, `erin joined #${channel}`);
  await erin.page.click(`[data-testid=channel-item][data-channel$="${channel}"] button`);
  /** How many committed messages of the open channel start with `prefix`. */
  const committed = (prefix, n, what) =>
    until(
      erin.page,
      what,
      ({ prefix, n }) =>
        [...document.querySelectorAll("[data-testid=message][data-state=committed] .body")].filter((b) => b.textContent.startsWith(prefix)).length === n,
      { prefix, n },
    );
  await committed(`[c4 start ${game} red=carol yellow=dave]`, 1, "the start record, committed");
  await committed("[c4 move ", 7, "the seven moves, committed");
  await committed("[c4 over win 1]", 1, "the result, committed");
  await seen(erin.page, `${panel}[data-mode=spectator][data-phase=over]`, "erin's board, replayed from the record");
  await seen(erin.page, "[data-testid=game-status]:has-text('carol wins')", "the winner, for the spectator");
  await until(erin.page, "the spectator's board", () => document.querySelectorAll("[data-testid=game-cell][data-disc=red]").length === 4 && document.querySelectorAll("[data-testid=game-cell][data-disc=yellow]").length === 3);
  await screenshot(erin.page, "spectator", still);

  // Carol leaves: the seat is given up, and dave hears of it.
  await carol.page.click("[data-testid=game-leave]");
  await seen(carol.page, "[data-testid=game-status]:has-text('Game over: you left')", "carol left, in words");
  await dave.expect("game over: player left");
  await seen(carol.page, "[data-testid=game-join]", "New game offered");

  for (const p of [carol, erin]) {
    if (p.errors.length) fail(`${p.name}'s page: ${p.errors.join("; ")}`);
  }
  console.log("scenario passed");
} catch (e) {
  console.log(`server log:\n${server.log.slice(-40).join("\n")}`);
  if (bot) console.log(`bot:\n${bot.lines.slice(-40).join("\n")}`);
  if (dave) console.log(`terminal player:\n${dave.lines.join("\n")}`);
  throw e;
} finally {
  await dave?.stop();
  await bot?.stop();
  await browser?.close();
  await server.stop();
  cleanup(dir);
}
