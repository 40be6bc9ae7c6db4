// Lint (`npm run lint`, run by `make test`): ESLint's and typescript-eslint's recommended rules and
// React's hook rules (the React Compiler's checks included), none of them switched off.
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

// One road to the server: REST goes through lib/api.ts, websockets through stream/socket.ts.
const oneRoad = {
  "no-restricted-globals": [
    "error",
    { name: "fetch", message: "Call the typed REST client (src/lib/api.ts)." },
    { name: "WebSocket", message: "Use LiveSocket (src/stream/socket.ts)." },
  ],
  "no-restricted-properties": [
    "error",
    { object: "globalThis", property: "fetch", message: "Call the typed REST client (src/lib/api.ts)." },
    { object: "window", property: "fetch", message: "Call the typed REST client (src/lib/api.ts)." },
    { object: "window", property: "WebSocket", message: "Use LiveSocket (src/stream/socket.ts)." },
  ],
};

export default defineConfig(
  { ignores: ["dist/", "src/lib/schema.gen.ts"] },
  js.configs.recommended,
  tseslint.configs.recommended,
  reactHooks.configs.flat.recommended,
  { languageOptions: { globals: { ...globals.browser } } },
  { files: ["src/**/*.{ts,tsx}"], ignores: ["src/lib/api.ts", "src/stream/socket.ts", "src/**/*.test.{ts,tsx}"], rules: oneRoad },
);
