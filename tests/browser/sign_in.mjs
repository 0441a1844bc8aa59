// Signing in without a link: a .cred file, "remember me" across a reload,
// "sign out" forgetting the key, a bad link in words, and the page on a
// phone-sized screen (the sidebar behind the menu button).

import { Server, launchBrowser, person, seen, until, screenshot, tempDir, cleanup, fail } from "./lib.mjs";

const dir = tempDir();
const server = new Server(dir);
const erin = server.addAccount("erin");
const frank = server.addAccount("frank");
let browser;

const connected = "[data-testid=connection-status][data-state=connected]";

try {
  await server.start();
  browser = await launchBrowser();

  // The sign-in screen, then a credentials file and "remember me".
  const e = await person(browser, "erin");
  await e.page.goto(server.page);
  await seen(e.page, "[data-testid=signin-file]", "the sign-in screen");
  await screenshot(e.page, "sign-in-screen");
  await e.page.check("[data-testid=remember-me]");
  await e.page.setInputFiles("[data-testid=signin-file]", erin.cred);
  await seen(e.page, connected, "erin signed in with her .cred file");
  await seen(e.page, "[data-testid=me]:text-is('erin')", "erin's name shown");

  // Remembered: a reload signs in again without asking.
  await e.page.reload();
  await seen(e.page, connected, "erin still signed in after a reload");

  // Sign out forgets the key: a reload shows the sign-in screen again.
  await e.page.click("[data-testid=sign-out]");
  await seen(e.page, "[data-testid=signin-file]", "the sign-in screen after signing out");
  const stored = await e.page.evaluate(() => JSON.stringify({ ...localStorage }));
  if (stored.includes(erin.fragment.slice("#cred=".length, 20)) || /[0-9a-f]{64}/.test(stored)) {
    fail(`a key is still in localStorage after signing out: ${stored}`);
  }
  await e.page.reload();
  await seen(e.page, "[data-testid=signin-file]", "still signed out after a reload");

  // Not remembered: a link sign-in leaves nothing in storage.
  await e.page.goto(server.link(erin));
  await seen(e.page, connected, "erin signed in with her link");
  const afterLink = await e.page.evaluate(() => JSON.stringify({ ...localStorage }));
  if (/[0-9a-f]{64}/.test(afterLink)) fail(`the key was stored without "remember me": ${afterLink}`);
  await e.page.click("[data-testid=sign-out]");

  // A broken link is explained in words.
  await e.page.goto(server.page + "#cred=not-a-credential");
  await seen(e.page, "[data-testid=signin-error]:not([hidden])", "an error for a broken link");
  const said = await e.page.textContent("[data-testid=signin-error]");
  if (!said || said.length < 10 || /undefined|\bnull\b|Error:/.test(said)) fail(`unclear sign-in error: ${said}`);

  // A phone-sized screen: the sidebar opens from the menu button.
  const f = await person(browser, "frank", { width: 390, height: 780 });
  await f.page.goto(server.link(frank));
  await seen(f.page, connected, "frank signed in on a phone-sized screen");
  await screenshot(f.page, "phone-conversation");
  await f.page.click("[data-testid=menu-button]");
  await seen(f.page, "[data-testid=user-item][data-user=erin]", "the people list on a phone");
  await until(f.page, "the sidebar is on screen", () => {
    const r = document.querySelector("[data-testid=people-list]")?.getBoundingClientRect();
    return r && r.width > 100 && r.left >= 0 && r.right <= window.innerWidth;
  });
  await screenshot(f.page, "phone-sidebar");

  // Dark mode is the system's choice.
  await f.page.emulateMedia({ colorScheme: "dark" });
  await screenshot(f.page, "phone-sidebar-dark");

  for (const p of [e, f]) {
    if (p.errors.length) fail(`${p.name}'s page: ${p.errors.join("; ")}`);
  }
  console.log("scenario passed");
} catch (error) {
  console.log(`server log:\n${server.log.slice(-30).join("\n")}`);
  throw error;
} finally {
  await browser?.close();
  await server.stop();
  cleanup(dir);
}
