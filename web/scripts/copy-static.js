// Copies the static page next to the bundle: dist/index.html, dist/app.js, dist/app.css
// are what the server embeds. (esbuild writes app.css itself, from main.js's CSS import.)
import { copyFileSync, existsSync } from 'node:fs';

copyFileSync(new URL('../index.html', import.meta.url), new URL('../dist/index.html', import.meta.url));
for (const f of ['app.js', 'app.css', 'index.html']) {
  if (!existsSync(new URL(`../dist/${f}`, import.meta.url))) {
    console.error(`build: dist/${f} is missing`);
    process.exit(1);
  }
}
