//! Builds the browser client (`web/` at the workspace root) and embeds it:
//! `npm ci` and `npm run build` in a copy of `web/` under `OUT_DIR`, then
//! `web_assets.rs` there lists the built files for `include_bytes!`.
//!
//! The page's JavaScript dependencies come from npm through `web/package-lock.json`
//! (none is copied into the repository), so building it needs Node.js and npm.
//! Without them the server still builds, with a page that says how to get
//! the client, and a warning; `SIGIL_REQUIRE_WEB=1` (set by `scripts/test.sh`)
//! makes that an error. `SIGIL_WEB_DIST=DIR` embeds a page built elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The files of the built page: (URL path, file in `dist/`, content type).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/app.css", "app.css", "text/css; charset=utf-8"),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = manifest.join("../../web");
    for watched in ["src", "scripts", "index.html", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SIGIL_WEB_DIST");
    println!("cargo:rerun-if-env-changed=SIGIL_REQUIRE_WEB");

    let built = match env::var_os("SIGIL_WEB_DIST") {
        Some(dist) => Ok(PathBuf::from(dist)),
        None => build_page(&web, &out.join("web")),
    };
    let listing = match built.and_then(|dist| listing(&dist)) {
        Ok(listing) => listing,
        Err(why) => {
            if env::var("SIGIL_REQUIRE_WEB").is_ok_and(|v| v == "1") {
                panic!("the browser client could not be built: {why}");
            }
            println!("cargo:warning=the browser client was not built ({why}); `/` will say so");
            "pub(crate) const BUILT: bool = false;\npub(crate) static ASSETS: &[Asset] = &[];\n".to_owned()
        }
    };
    fs::write(out.join("web_assets.rs"), listing).expect("write web_assets.rs");
}

/// Copies `web` (without `node_modules` and `dist`) to `work`, installs its
/// locked dependencies and builds it; returns the `dist` directory.
fn build_page(web: &Path, work: &Path) -> Result<PathBuf, String> {
    if !web.join("package.json").exists() {
        return Err(format!("{} has no package.json", web.display()));
    }
    copy_tree(web, work).map_err(|e| format!("copying {}: {e}", web.display()))?;
    let npm = env::var("NPM").unwrap_or_else(|_| "npm".to_owned());
    // `npm ci` only when the lockfile changed since the last install here.
    let lock = fs::read(web.join("package-lock.json")).unwrap_or_default();
    let stamp = work.join("node_modules/.sigil-lock");
    if fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        run(Command::new(&npm).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(work))?;
        fs::write(&stamp, &lock).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    let _ = fs::remove_dir_all(work.join("dist"));
    run(Command::new(&npm).args(["run", "--silent", "build"]).current_dir(work))?;
    Ok(work.join("dist"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| format!("{shown}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{shown} failed ({}): {}", output.status, stderr.trim()))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The Rust source listing the built files.
fn listing(dist: &Path) -> Result<String, String> {
    let mut rust = String::from("pub(crate) const BUILT: bool = true;\npub(crate) static ASSETS: &[Asset] = &[\n");
    for (path, file, content_type) in ASSETS {
        let full = dist.join(file);
        let bytes = fs::read(&full).map_err(|e| format!("the build did not produce {}: {e}", full.display()))?;
        // FNV-1a: an ETag that changes with the content.
        let etag =
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        rust.push_str(&format!(
            "    Asset {{ path: {path:?}, content_type: {content_type:?}, etag: \"\\\"{etag:016x}\\\"\", body: include_bytes!({:?}) }},\n",
            full.display().to_string()
        ));
    }
    rust.push_str("];\n");
    Ok(rust)
}
