// The console is built by crates/service/build.rs (cargo) with
// `vite build --outDir $OUT_DIR/console`, and embedded into the hub.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    assetsDir: 'assets',
    // No inline scripts or styles: the hub's Content-Security-Policy
    // allows only files of its own origin.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    cssCodeSplit: false,
    chunkSizeWarningLimit: 1500,
  },
});
