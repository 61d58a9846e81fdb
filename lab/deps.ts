/**
 * The third-party dependencies of the lab beside the library's (`../deps.ts`), as full `npm:` specifiers: YAML for
 * configurations and results, resvg (WebAssembly) for PNG plots.
 *
 * @module
 */
export { parse as parseYaml, stringify as stringifyYaml } from "npm:yaml@^2.8.0";
export { initWasm, Resvg } from "npm:@resvg/resvg-wasm@2.6.2";

/** Where the wasm binary inside the same resvg package version as the import above is. */
export const RESVG_WASM_URL: string = import.meta.resolve("npm:@resvg/resvg-wasm@2.6.2/index_bg.wasm");
