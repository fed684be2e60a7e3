import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { defineConfig, type Plugin } from "vite";

const OUT_DIR = "dist";
const ASSETS_DIR = "assets";
const edge = `127.0.0.1:${process.env.EDGE_PORT ?? "8080"}`;

/** Writes .br and .gz beside each text asset, so the edge sends compressed bytes without
 * compressing on every request. */
function precompress(): Plugin {
  return {
    name: "chatpop-precompress",
    apply: "build",
    closeBundle() {
      const dir = join(OUT_DIR, ASSETS_DIR);
      for (const name of readdirSync(dir)) {
        if (!/\.(js|css|svg|json)$/.test(name)) continue;
        const data = readFileSync(join(dir, name));
        writeFileSync(join(dir, `${name}.gz`), gzipSync(data, { level: 9 }));
        writeFileSync(
          join(dir, `${name}.br`),
          brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
        );
      }
    },
  };
}

// The edge serves dist/: index.html without caching, dist/assets/* (content-hashed) as immutable.
export default defineConfig({
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  plugins: [precompress()],
  build: {
    outDir: OUT_DIR,
    assetsDir: ASSETS_DIR,
    emptyOutDir: true,
    // Every asset is a hashed file: data: URIs would need a looser CSP and defeat immutable caching.
    assetsInlineLimit: 0,
    // Browsers this client targets all support <link rel=modulepreload>; the polyfill is dead weight.
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev` beside a running `make run` (edge on 8080 unless EDGE_PORT says otherwise).
    proxy: {
      "/api": `http://${edge}`,
      "/.well-known": `http://${edge}`,
      "/ws": { target: `ws://${edge}`, ws: true },
    },
  },
});
