// Three people in browsers and one in a terminal: sign in with links, chat
// privately (with delivery ticks), create and join a channel, elect, commit,
// talk with the `sigil client` user, lose the leader and re-elect, survive a
// server restart, and pull what was missed.

import {
  Server,
  TerminalUser,
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
const accounts = Object.fromEntries(["alice", "bob", "carol", "dave"].map((n) => [n, server.addAccount(n)]));
let browser;
let dave;

/** A message with `text` in the open conversation of `page`. */
function message(text) {
  return `[data-testid=message]:has(.body:text-is(${JSON.stringify(text)}))`;
}

async function connected(page, who) {
  await seen(page, "[data-testid=connection-status][data-state=connected]", `${who} connected`);
}

async function signIn(name) {
  const p = await person(browser, name);
  await p.page.goto(server.link(accounts[name]));
  await connected(p.page, name);
  // The key must not stay in the address bar.
  if (p.page.url().includes("#cred=")) fail(`${name}: the sign-in fragment stayed in the address bar`);
  return p;
}

async function send(page, text) {
  await page.fill("[data-testid=composer]", text);
  await page.press("[data-testid=composer]", "Enter");
}

async function openChannel(page, name) {
  await page.click(`[data-testid=channel-item][data-channel$="${name}"] button`);
}

async function openPerson(page, name) {
  await page.click(`[data-testid=user-item][data-user="${name}"] button`);
}

async function joinChannel(page, name) {
  await page.click("[data-testid=join-channel]");
  await page.fill("[data-testid=join-channel-name]", name);
  await page.click("[data-testid=join-channel-submit]");
  await seen(page, `[data-testid=channel-item][data-channel$="${name}"]`, `joined #${name}`);
  await openChannel(page, name);
}

/** The leader's name as `page` shows it, once there is one other than `not`. */
async function leaderOn(page, who, not = "") {
  const handle = await until(
    page,
    `${who} sees a leader${not ? ` other than ${not}` : ""}`,
    (not) => {
      const l = document.querySelector("[data-testid=leader]")?.getAttribute("data-leader");
      return l && l !== not ? l : null;
    },
    not,
  );
  return handle.jsonValue();
}

/** `text` is shown committed on `page` (the channel is open there). */
async function committed(page, who, text) {
  await seen(page, `${message(text)}[data-state=committed]`, `${who} sees "${text}" committed`);
}

try {
  await server.start();
  browser = await launchBrowser();

  const alice = await signIn("alice");
  await screenshot(alice.page, "alice-signed-in");
  const bob = await signIn("bob");
  const carol = await signIn("carol");

  // Presence, by name.
  await seen(alice.page, '[data-testid=user-item][data-user=bob][data-online=true]', "alice sees bob online");
  await seen(alice.page, '[data-testid=user-item][data-user=dave][data-online=false]', "alice sees dave offline");

  // A private message, delivered.
  await openPerson(alice.page, "bob");
  await send(alice.page, "hi bob, just us");
  await seen(alice.page, `${message("hi bob, just us")}[data-delivered=true]`, "alice's private message delivered");
  await seen(bob.page, '[data-testid=user-item][data-user=alice] [data-testid=unread-badge]:not(:empty)', "bob's unread count");
  await openPerson(bob.page, "alice");
  await seen(bob.page, message("hi bob, just us"), "bob reads alice's message");
  await send(bob.page, "hi alice!");
  await seen(alice.page, message("hi alice!"), "alice reads bob's answer");
  await screenshot(alice.page, "private-conversation");

  // A channel: created, joined by name, a leader elected, a message committed.
  await alice.page.click("[data-testid=create-channel]");
  await alice.page.fill("[data-testid=create-channel-name]", "general");
  await alice.page.click("[data-testid=create-channel-submit]");
  await seen(alice.page, '[data-testid=channel-item][data-channel$="general"]', "alice's new channel");
  await openChannel(alice.page, "general");
  await joinChannel(bob.page, "general");
  await joinChannel(carol.page, "general");
  for (const p of [alice, bob, carol]) await leaderOn(p.page, p.name);
  await send(alice.page, "hello, channel");
  for (const p of [alice, bob, carol]) await committed(p.page, p.name, "hello, channel");

  // The terminal user: joins by name, reads the history, talks both ways.
  dave = new TerminalUser(server, accounts.dave);
  await dave.waitFor("signed in as dave");
  await seen(alice.page, '[data-testid=user-item][data-user=dave][data-online=true]', "alice sees dave online");
  dave.say("/list");
  await dave.waitFor("#general", "the channel list");
  dave.say("/join general");
  await dave.waitFor("<alice> hello, channel", "the channel's history in the terminal");
  dave.say("hello from the terminal");
  for (const p of [alice, bob, carol]) await committed(p.page, p.name, "hello from the terminal");
  await send(bob.page, "welcome, dave");
  await dave.waitFor("<bob> welcome, dave");
  dave.say("/msg alice psst, from the terminal");
  await seen(alice.page, '[data-testid=user-item][data-user=dave] [data-testid=unread-badge]:not(:empty)', "alice's unread from dave");
  await openPerson(alice.page, "dave");
  await seen(alice.page, message("psst, from the terminal"), "alice reads dave's private message");
  await send(alice.page, "got it, dave");
  await dave.waitFor("got it, dave");
  await openChannel(alice.page, "general");
  await screenshot(alice.page, "channel-with-terminal-user");
  await screenshot(bob.page, "channel-bob");

  // The leader goes away; the others elect another and go on committing.
  const leader = await leaderOn(alice.page, "alice");
  const people = { alice, bob, carol };
  if (leader === "dave") {
    await dave.stop();
    dave = null;
  } else {
    await people[leader].context.close();
    delete people[leader];
  }
  const stayed = Object.values(people);
  for (const p of stayed) await leaderOn(p.page, p.name, leader);
  await send(stayed[0].page, "the leader left, we go on");
  for (const p of stayed) await committed(p.page, p.name, "the leader left, we go on");
  await screenshot(stayed[0].page, "re-elected");

  // The server restarts: the pages see it, reconnect and keep the channel.
  await server.restart();
  for (const p of stayed) {
    await connected(p.page, `${p.name} after the restart`);
    await leaderOn(p.page, `${p.name} after the restart`);
  }
  await send(stayed[1].page, "still here after the restart");
  for (const p of stayed) await committed(p.page, p.name, "still here after the restart");

  // Whoever left signs in again and pulls what they missed.
  if (leader !== "dave") {
    const back = await signIn(leader);
    await openChannel(back.page, "general");
    for (const text of ["hello, channel", "the leader left, we go on", "still here after the restart"]) {
      await committed(back.page, leader, text);
    }
    await screenshot(back.page, "history-pulled");
  }
  for (const p of stayed) {
    if (p.errors.length) fail(`${p.name}'s page: ${p.errors.join("; ")}`);
  }
  console.log("scenario passed");
} catch (e) {
  console.log(`server log:\n${server.log.slice(-40).join("\n")}`);
  if (dave) console.log(`terminal:\n${dave.lines.join("\n")}`);
  throw e;
} finally {
  await dave?.stop();
  await browser?.close();
  await server.stop();
  cleanup(dir);
}
