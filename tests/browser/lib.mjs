// The browser tests' harness: a real `sigil serve` on 127.0.0.1 (ports picked
// by the server), accounts with sign-in links, Debian's Chromium driven by
// playwright-core, a `sigil client` in line mode, and screenshots.
//
// Every wait is on something the page or a process shows, bounded by
// WAIT_MS: nothing here sleeps for a fixed time to let things happen.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

/** How long any one expected thing may take before the test fails. */
export const WAIT_MS = 20_000;

const SIGIL = process.env.SIGIL_BIN ?? "sigil";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.SIGIL_SCREENSHOTS ?? join(tmpdir(), "sigil-screenshots");

/** Fails the test with `message` (and what the server logged). */
export function fail(message) {
  throw new Error(message);
}

/** A `sigil serve` process; `restart()` keeps its database and both ports. */
export class Server {
  constructor(dir) {
    this.dir = dir;
    this.db = join(dir, "sigil.db");
    this.tcp = null;
    this.web = null;
    this.proc = null;
    this.log = [];
  }

  /** Starts on free ports (or the ones it had, on restart). */
  async start() {
    const tcp = this.tcp ?? "127.0.0.1:0";
    const web = this.web ?? "127.0.0.1:0";
    const proc = spawn(SIGIL, ["serve", tcp, "--web", web, "--db", this.db, "--log-format", "json"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.proc = proc;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    this.exited = exited;
    await new Promise((resolve, reject) => {
      let pending = "";
      const timer = setTimeout(() => reject(new Error(`sigil serve did not start:\n${this.log.join("\n")}`)), WAIT_MS);
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`sigil serve exited (${code}):\n${this.log.join("\n")}`));
      });
      proc.stderr.on("data", (chunk) => {
        pending += chunk.toString();
        let at;
        while ((at = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, at);
          pending = pending.slice(at + 1);
          this.log.push(line);
          let fields = {};
          try {
            fields = JSON.parse(line).fields ?? {};
          } catch {
            continue;
          }
          if (String(fields.message ?? "").startsWith("web listener")) this.web = fields.addr;
          if (fields.message === "listening") this.tcp = fields.addr;
          if (this.web && this.tcp && fields.message === "listening") {
            clearTimeout(timer);
            resolve();
          }
        }
      });
    });
    return this;
  }

  /** The page's address. */
  get page() {
    return `http://${this.web}/`;
  }

  /** SIGTERM, and waits for the exit (sessions get `ERR shutdown`). */
  async stop() {
    if (!this.proc) return;
    this.proc.kill("SIGTERM");
    await this.exited;
    this.proc = null;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /** Creates an account; returns its name, `.cred` path and sign-in link. */
  addAccount(name) {
    const cred = join(this.dir, `${name}.cred`);
    const out = execFileSync(
      SIGIL,
      ["account", "add", name, "--db", this.db, "--out", cred, "--link", "http://sigil.invalid/"],
      { encoding: "utf8" },
    );
    const line = out.trim().split("\n").pop();
    if (!line.startsWith("http://sigil.invalid/#cred=")) fail(`no sign-in link in: ${out}`);
    return { name, cred, fragment: line.slice("http://sigil.invalid/".length) };
  }

  /** The sign-in link of `account` for this server's page. */
  link(account) {
    return this.page + account.fragment;
  }
}

/**
 * A process read line by line (stdout and stderr together): `expect` waits
 * for the next line with a needle, in order, as tests/game.rs does.
 */
class LineProcess {
  constructor(args, what) {
    this.what = what;
    this.lines = [];
    this.read = 0;
    this.waiters = [];
    this.proc = spawn(SIGIL, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.exited = new Promise((resolve) => this.proc.once("exit", resolve));
    const pending = { stdout: "", stderr: "" };
    const take = (stream) => (chunk) => {
      pending[stream] += chunk.toString();
      let at;
      while ((at = pending[stream].indexOf("\n")) >= 0) {
        this.lines.push(pending[stream].slice(0, at));
        pending[stream] = pending[stream].slice(at + 1);
      }
      this.waiters = this.waiters.filter((w) => !w());
    };
    this.proc.stdout.on("data", take("stdout"));
    this.proc.stderr.on("data", take("stderr"));
  }

  /** Types a line. */
  say(line) {
    this.proc.stdin.write(line + "\n");
  }

  _wait(find, what) {
    const found = find();
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.what} never printed ${JSON.stringify(what)}:\n${this.lines.join("\n")}`)),
        WAIT_MS,
      );
      this.waiters.push(() => {
        const line = find();
        if (line === undefined) return false;
        clearTimeout(timer);
        resolve(line);
        return true;
      });
    });
  }

  /** Waits for a printed line (any so far) that contains `needle`; returns it. */
  waitFor(needle, what = needle) {
    return this._wait(() => this.lines.find((l) => l.includes(needle)), what);
  }

  /** Waits for the next line, after the last one expected, that contains `needle`; returns it. */
  expect(needle, what = needle) {
    return this._wait(() => {
      const at = this.lines.findIndex((l, i) => i >= this.read && l.includes(needle));
      if (at < 0) return undefined;
      this.read = at + 1;
      return this.lines[at];
    }, what);
  }

  /** SIGTERM, and waits for the exit (SIGKILL after WAIT_MS). */
  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    let timer;
    const late = new Promise((resolve) => (timer = setTimeout(() => resolve("late"), WAIT_MS)));
    if ((await Promise.race([this.exited, late])) === "late") this.proc.kill("SIGKILL");
    clearTimeout(timer);
  }
}

/** A `sigil client` in line mode (stdout is a pipe): lines in, lines out. */
export class TerminalUser extends LineProcess {
  constructor(server, account) {
    super(["client", server.tcp, "--cred", account.cred], "the terminal user");
  }
}

/** The connect-four referee bot, `sigil game serve`, on `account`. */
export class GameBot extends LineProcess {
  constructor(server, account) {
    super(["game", "serve", server.tcp, "--cred", account.cred], "the bot");
  }
}

/** A connect-four player in the terminal, `sigil game play --plain` (it joins a game at start). */
export class GamePlayer extends LineProcess {
  constructor(server, account, bot = "connect4") {
    super(["game", "play", server.tcp, "--cred", account.cred, "--plain", "--bot", bot], `the terminal player ${account.name}`);
  }
}

/** Headless Debian Chromium, with the flags this closed network needs. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * The one console error a page may log: Chromium's own line for a WebSocket
 * that could not connect, while the server restarts (the page then retries).
 */
const EXPECTED_CONSOLE_ERROR = /^WebSocket connection to 'wss?:\/\/[^']*' failed(?::|$)/;

/** One person: a browser context of their own (their own storage). */
export async function person(browser, name, viewport = { width: 1200, height: 780 }) {
  const context = await browser.newContext({ viewport });
  const errors = [];
  // Content-Security-Policy violations, kept in the page (window.__cspViolations) and reported here.
  await context.exposeBinding("__sigilCspViolation", (_source, v) => {
    errors.push(`CSP violation: ${v.directive} blocked ${v.blocked || "(inline)"} at ${v.source}`);
  });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    window.addEventListener("securitypolicyviolation", (e) => {
      const v = {
        directive: e.effectiveDirective || e.violatedDirective,
        blocked: e.blockedURI,
        source: `${e.sourceFile || e.documentURI}:${e.lineNumber}:${e.columnNumber}`,
      };
      window.__cspViolations.push(v);
      window.__sigilCspViolation?.(v);
    });
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  // Every console error fails the test (a CSP violation logs one too), but a
  // WebSocket that could not connect during a server restart.
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (EXPECTED_CONSOLE_ERROR.test(text)) return;
    errors.push(`console error: ${text}`);
  });
  // Any request that leaves the server is a failure: the page must work offline.
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!["127.0.0.1", "localhost"].includes(url.hostname) && url.protocol !== "data:") {
      errors.push(`outside request: ${request.url()}`);
    }
  });
  return { name, context, page, errors };
}

/** Waits until `selector` matches a visible element on `page`. */
export async function seen(page, selector, what = selector) {
  try {
    return await page.waitForSelector(selector, { timeout: WAIT_MS });
  } catch {
    fail(`${what}: not seen within ${WAIT_MS} ms (${selector})`);
  }
}

/** Waits until `fn(arg)` is truthy in the page. */
export async function until(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  } catch {
    fail(`${what}: not seen within ${WAIT_MS} ms`);
  }
}

let shotCount = 0;
/**
 * Saves a screenshot of `page` as SCENARIO/NN-name.png in the screenshot
 * directory; `options` go to playwright (e.g. `{animations: "disabled"}`).
 */
export async function screenshot(page, name, options = {}) {
  const scenario = basename(process.argv[1] ?? "scenario", ".mjs");
  mkdirSync(join(SHOTS, scenario), { recursive: true });
  shotCount += 1;
  const file = join(SHOTS, scenario, `${String(shotCount).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ ...options, path: file });
  return file;
}

/** A temporary directory, removed by `cleanup`. */
export function tempDir() {
  return mkdtempSync(join(tmpdir(), "sigil-browser-"));
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}
