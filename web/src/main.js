// Wiring: sign-in (link, file, remembered), the client over WebSocket, the view.

import './styles.css';
import { SigilClient } from './client.js';
import { webSocketTransport, defaultUrl } from './connection.js';
import * as creds from './credentials.js';
import { View } from './view.js';

let client = null;
let remembered = false;
let renderQueued = false;
let namesSaved = 0;

const view = new View({
  onSend: (text) => client?.sendText(text),
  onSelect: (kind, id) => client?.select(kind, id),
  onCreate: (name) => (client ? client.createChannel(name) : 'Not signed in.'),
  onJoin: (name) => (client ? client.joinChannel(name) : 'Not signed in.'),
  onLeave: (id) => client?.leaveChannel(id),
  onRefresh: () => client?.refreshChannels(),
  onRetry: (kind, conv, msg) => client?.retry(kind, conv, msg),
  onPlayGame: (userId) => client?.playGame(userId),
  onGame: (userId, type, fields) => client?.gameRequest(userId, type, fields),
  onShowGame: (userId, shown) => client?.showGame(userId, shown),
  onReconnect: () => client?.start(),
  onSignOut: () => signOut(null),
  onRemember: (on) => setRemembered(on),
  onCredFile: (file, remember) => readCredFile(file, remember),
  onLink: (text, remember) => {
    try {
      signIn(creds.credFromLink(text), remember);
    } catch (err) {
      view.showSignin(err instanceof creds.CredentialError ? err.message : 'That sign-in link could not be read.');
    }
  },
});

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  // Background tabs get no animation frames; the title's unread count should still move.
  const later = document.hidden ? (f) => setTimeout(f, 50) : requestAnimationFrame;
  later(() => {
    renderQueued = false;
    try {
      view.render();
    } catch (err) {
      console.error('render failed', err);
    }
    afterChange();
  });
}

function afterChange() {
  if (!client) return;
  // A sign-in refused before it ever worked: back to the sign-in screen, in words.
  if (client.final && client.sessions === 0) {
    signOut(client.problem ?? 'The server did not accept this sign-in.');
    return;
  }
  // Names of people seen, remembered with the credential so offline people keep them.
  if (remembered && Date.now() - namesSaved > 5000) {
    namesSaved = Date.now();
    creds.rememberNames(client.chat.names());
  }
}

/** The server's clock from the Date header of this page (same origin), to correct a skewed clock. */
async function serverTime() {
  const r = await fetch(location.pathname, { method: 'HEAD', cache: 'no-store' });
  const t = Date.parse(r.headers.get('Date') ?? '');
  return Number.isFinite(t) ? t + 500 : null;
}

function signIn(cred, remember) {
  if (client) client.stop();
  const stored = creds.recall();
  if (remember) remembered = creds.remember(cred);
  else if (stored && stored.id === cred.id) {
    // The same account, remembered here: keep it so, with the key just given (a rotated
    // key's new link must replace the old key, which the server no longer accepts).
    remembered = stored.keyHex === cred.keyHex || creds.remember(cred);
    if (!remembered) creds.forget();
  } else {
    // Another account signs in on this tab: do not keep the old one's key around.
    if (stored) creds.forget();
    remembered = false;
  }
  client = new SigilClient({
    credentials: cred,
    transport: webSocketTransport(defaultUrl()),
    names: remembered ? creds.recallNames() : {},
    serverTime,
    onChange: scheduleRender,
    log: (level, msg) => (level === 'error' ? console.error : console.warn)(`sigil: ${msg}`),
  });
  view.showApp(client, remembered);
  client.start();
}

function signOut(message) {
  if (client) client.stop();
  client = null;
  creds.forget();
  remembered = false;
  view.showSignin(message);
}

function setRemembered(on) {
  if (!client) return;
  if (on) {
    remembered = creds.remember(client.cred);
    if (!remembered) {
      // Still signed in, only not remembered: say so where the person is, and untick the box.
      view.setRemembered(false);
      client.chat.notify('This browser does not allow storing data: you stay signed in only while this tab is open.', 'info');
      scheduleRender();
    }
  } else {
    creds.forget();
    remembered = false;
  }
}

async function readCredFile(file, remember) {
  if (file.size > 4096) {
    view.showSignin(`${file.name} is too large to be a sigil credentials file.`);
    return;
  }
  try {
    signIn(creds.fromJsonText(await file.text(), file.name), remember);
  } catch (err) {
    view.showSignin(err instanceof creds.CredentialError ? err.message : `${file.name} could not be read.`);
  }
}

// When the network comes back, do not wait for the backoff timer.
window.addEventListener('online', () => {
  if (client && client.state === 'offline' && !client.final && !client.stopped) client.start();
});

// Read-only hook for automated tests: a JSON copy of the state, never the key.
Object.defineProperty(window, 'sigilDebug', {
  value: Object.freeze({
    snapshot: () => JSON.parse(JSON.stringify(client ? client.snapshot() : { connected: false, state: 'signed-out', me: null, channels: [], unread: 0 })),
  }),
  writable: false,
  configurable: false,
});

/**
 * A sign-in link in the address bar: taken out of it at once (it holds the
 * key), then used. Returns false when the fragment holds no link.
 */
function signInFromHash() {
  if (!location.hash) return false;
  let fromLink = null;
  let linkError = null;
  try {
    fromLink = creds.credFromHash(location.hash);
  } catch (err) {
    linkError = err instanceof creds.CredentialError ? err.message : 'This sign-in link could not be read.';
  }
  if (!fromLink && !linkError) return false;
  history.replaceState(null, '', location.pathname + location.search);
  if (fromLink) signIn(fromLink, false);
  else view.showSignin(linkError);
  return true;
}

// A link opened in a tab that already shows the page changes only the fragment.
window.addEventListener('hashchange', signInFromHash);

// Start: a sign-in link first, else a remembered credential.
if (!signInFromHash()) {
  const stored = creds.recall();
  if (stored) signIn(stored, true);
  else view.showSignin();
}
