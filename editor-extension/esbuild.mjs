// Bundles the extension into one file; `vscode` is provided by the editor at run time.
import * as esbuild from "esbuild";

await esbuild.build({
  entryPoints: ["src/extension.ts"],
  bundle: true,
  outfile: "dist/extension.js",
  external: ["vscode"],
  format: "cjs",
  platform: "node",
  target: "node20",
  sourcemap: true,
  minify: process.env.NODE_ENV === "production",
  logLevel: "warning",
});
