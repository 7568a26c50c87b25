import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build goes into the Python package, which `runyard server` serves at /.
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../src/runyard/server/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8765" } },
});
