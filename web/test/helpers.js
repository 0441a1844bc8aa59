// Shared test helpers: the sigil binary, temporary databases, accounts, servers.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The sigil binary: $SIGIL_BIN, else the workspace's debug build. */
export const SIGIL_BIN = process.env.SIGIL_BIN || fileURLToPath(new URL('../../target/debug/sigil', import.meta.url));

/** Why tests that need the binary are skipped, or false when it is there. */
export const skipWithoutBinary = existsSync(SIGIL_BIN) ? false : `sigil binary not found at ${SIGIL_BIN} (set SIGIL_BIN)`;
if (skipWithoutBinary && process.env.SIGIL_REQUIRE_TOOLS === '1') {
  throw new Error(`the server tests are required (SIGIL_REQUIRE_TOOLS=1) but ${skipWithoutBinary}`);
}
if (skipWithoutBinary) console.log(`# skipping server tests: ${skipWithoutBinary}`);

export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-web-test-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Creates an account; returns {id, name, key} (key: 64 hex). */
export function addAccount(db, name) {
  const out = execFileSync(SIGIL_BIN, ['account', 'add', name, '--db', db, '--json'], { encoding: 'utf8' });
  return JSON.parse(out.trim());
}

/** Starts `sigil serve` on a free loopback port; resolves to {port, stop()}. */
export function startServer(db, extra = []) {
  const help = execFileSync(SIGIL_BIN, ['serve', '--help'], { encoding: 'utf8' });
  const noWeb = help.includes('--no-web') ? ['--no-web'] : ['--web', 'none'];
  const child = spawn(SIGIL_BIN, ['serve', '127.0.0.1:0', '--db', db, ...noWeb, '--log-format', 'json', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start:\n${log}`));
    }, 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      for (const line of log.split('\n')) {
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        const f = entry.fields || {};
        // The frame listener (not a web or TLS one: their log lines name them).
        const { db: _db, ...rest } = f;
        if (f.message === 'listening' && typeof f.addr === 'string' && !/web|http|tls/i.test(JSON.stringify(rest))) {
          clearTimeout(timer);
          const port = Number(f.addr.split(':').pop());
          resolve({
            port,
            log: () => log,
            stop: () =>
              new Promise((done) => {
                if (child.exitCode !== null) return done();
                child.once('exit', () => done());
                child.kill('SIGTERM');
                setTimeout(() => child.kill('SIGKILL'), 5000).unref();
              }),
          });
          return;
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
}

/** Polls `check` until it returns a truthy value, or fails after `ms`. */
export async function waitFor(what, check, ms = 10_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
