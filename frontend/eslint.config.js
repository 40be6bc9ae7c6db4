// Lint (`npm run lint`, run by `make test`): ESLint's and typescript-eslint's recommended rules and
// React's hook rules (the React Compiler's checks included), none of them switched off.
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/", "src/lib/schema.gen.ts"] },
  js.configs.recommended,
  tseslint.configs.recommended,
  reactHooks.configs.flat.recommended,
  { languageOptions: { globals: { ...globals.browser } } },
);
