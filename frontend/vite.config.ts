/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Django serves the built assets under /static/ (STATICFILES_DIRS includes frontend/dist) and
// index.html at /app/; the dev server proxies the API and websockets to a local Django.
// Where `npm run dev` finds Django (override with DJANGO_DEV_URL=http://127.0.0.1:8011).
const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const django = env.DJANGO_DEV_URL ?? "http://127.0.0.1:8000";

export default defineConfig(({ command }) => ({
  base: command === "build" ? "/static/" : "/",
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/api": django,
      "/accounts": django,
      "/ws": { target: django.replace(/^http/, "ws"), ws: true },
    },
  },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
  },
}));
