import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// prebuildd serves the built files under /ui/ (src/transport/ui.rs embeds
// dist/ into the binary). The output is committed and must be reproducible:
// no build timestamps, no source maps with absolute paths.
export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    assetsInlineLimit: 0,
  },
  server: {
    // `npm run dev`: the API calls go to a prebuildd on the default port.
    proxy: {
      "/gitpod.v1.PrebuildService": "http://127.0.0.1:8080",
      "/logs": "http://127.0.0.1:8080",
    },
  },
});
