// Builds the Cockpit package into dist/ (or the directory given with --outdir): index.js and
// index.css bundled by esbuild from src/, index.html and manifest.json copied. The output depends
// only on the sources and the locked toolchain (package-lock.json), so a test can rebuild it and
// compare it byte for byte with what is committed and installed.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const at = process.argv.indexOf("--outdir");
const outdir = at > 0 ? process.argv[at + 1] : join(here, "dist");

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
await build({
    entryPoints: [join(here, "src/index.js")],
    outdir,
    bundle: true,
    minify: true,
    format: "iife",
    target: ["es2020"],
    legalComments: "none",
    logLevel: "warning",
    absWorkingDir: here,
    // PatternFly's Red Hat fonts are left out (the page falls back to the system's sans-serif):
    // they would triple the package for no function.
    external: ["*.woff2", "*.woff"],
});
for (const f of ["index.html", "manifest.json"])
    copyFileSync(join(here, f), join(outdir, f));
