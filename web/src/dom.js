// Small DOM helpers shared by the view and the game panel: build an
// element, and set text or attributes only when they change (so unchanged
// nodes, focus and live regions are left alone).

/** The element with id `id`. */
export const $ = (id) => document.getElementById(id);

/** A new element: `props` sets class, text, data-/aria- attributes, role, type, title or properties. */
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'type' || k === 'title') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

/** Sets `node`'s text only when it changes. */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Sets (or, for null, undefined or false, removes) an attribute only when it changes. */
export function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}
