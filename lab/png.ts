/**
 * SVG → PNG rendering with resvg compiled to WebAssembly (`@resvg/resvg-wasm`), and {@link savePlot},
 * which writes a plot as both `name.svg` and `name.png`.
 *
 * The wasm module shipped in the npm package is located with `import.meta.resolve`, read once and
 * initialised once per process. resvg draws text only with fonts it is given: a TrueType font is looked
 * up in the usual system locations (DejaVu Sans first) unless `fontPath` names one; when none is found
 * the image is still rendered, without text, and a warning says so.
 *
 * @module
 */
import { initWasm, Resvg, RESVG_WASM_URL } from "./deps.ts";
import { z } from "../deps.ts";
import { checkOptions, OptionsError, writeFileAtomicSync } from "../mod.ts";

/** Fonts tried, in order, when no `fontPath` is given. */
export const DEFAULT_FONT_PATHS: readonly string[] = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
  "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
  "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
  "/System/Library/Fonts/Supplemental/Arial.ttf",
  "/Library/Fonts/Arial.ttf",
  "C:\\Windows\\Fonts\\arial.ttf",
];

let wasmReady: Promise<void> | undefined;

async function loadWasmBytes(): Promise<Uint8Array> {
  const url = RESVG_WASM_URL;
  if (url.startsWith("file:")) return await Deno.readFile(new URL(url));
  const response = await fetch(url);
  if (!response.ok) throw new Error(`fetching resvg wasm from ${url} failed: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Initialise resvg's wasm module once per process (safe to call concurrently and repeatedly). */
function ensureWasm(): Promise<void> {
  wasmReady ??= (async () => {
    try {
      await initWasm(await loadWasmBytes());
    } catch (err) {
      // Another module of the process may have initialised the same package already.
      if (err instanceof Error && /already initiali[sz]ed/i.test(err.message)) return;
      wasmReady = undefined;
      throw new Error(
        `could not initialise resvg wasm (${RESVG_WASM_URL}): ${err instanceof Error ? err.message : err}`,
        {
          cause: err,
        },
      );
    }
  })();
  return wasmReady;
}

const fontCache = new Map<string, Uint8Array[]>();

function readIfExists(path: string): Uint8Array | undefined {
  try {
    return Deno.readFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The font files to give resvg: the regular face and, when it sits next to it, the bold face (so bold
 * titles render bold). An explicit `fontPath` that cannot be read is an error.
 */
function loadFonts(fontPath: string | undefined): { fonts: Uint8Array[]; warning?: string } {
  const candidates = fontPath === undefined ? DEFAULT_FONT_PATHS : [fontPath];
  for (const path of candidates) {
    const cached = fontCache.get(path);
    if (cached !== undefined) return { fonts: cached };
    const regular = readIfExists(path);
    if (regular === undefined) continue;
    const fonts = [regular];
    const bold = path.match(/\.(ttf|otf)$/i)
      ? readIfExists(path.replace(/(-Regular)?\.(ttf|otf)$/i, "-Bold.$2"))
      : undefined;
    if (bold !== undefined) fonts.push(bold);
    fontCache.set(path, fonts);
    return { fonts };
  }
  if (fontPath !== undefined) throw new Error(`font file "${fontPath}" could not be read`);
  return {
    fonts: [],
    warning: `no TrueType font found (looked for ${DEFAULT_FONT_PATHS.join(", ")}); the PNG has no text. ` +
      `Install one (e.g. apt-get install -y fonts-dejavu-core) or pass fontPath.`,
  };
}

const SVG_TO_PNG_OPTIONS = z.object({
  width: z.int().min(1),
  zoom: z.number().gt(0),
  fontPath: z.string(),
  background: z.string(),
}).partial().strict();
const SAVE_PLOT_OPTIONS = z.object({ width: z.int().min(1), fontPath: z.string() }).partial().strict();

/** Options of {@link svgToPng}. */
export interface SvgToPngOptions {
  /**
   * Output width in px, a positive integer; the height follows the aspect ratio. Default: the SVG's own width times
   * `zoom`.
   */
  width?: number;
  /** Scale factor, a finite number > 0, when `width` is not given (default 1); give one of the two. */
  zoom?: number;
  /** A TrueType/OpenType font file for the text; system fonts are searched when omitted. */
  fontPath?: string;
  /** Background colour (CSS); transparent when omitted. */
  background?: string;
}

/** A rendered PNG. */
export interface PngImage {
  /** The PNG file's bytes. */
  png: Uint8Array;
  /** Width in px. */
  width: number;
  /** Height in px. */
  height: number;
  /** Problems that did not stop rendering (e.g. no font found, so no text). */
  warnings: string[];
}

/**
 * Render an SVG document to PNG.
 *
 * @param svg The SVG text.
 * @param options Output width or zoom, font file, background.
 * @returns The PNG bytes, their size, and warnings.
 *
 * @example
 * ```ts
 * import { svgToPng } from "./png.ts";
 * import { linePlot } from "./plot.ts";
 * const svg = linePlot({ title: "demo", series: [{ name: "y=x²", x: [0, 1, 2], y: [0, 1, 4] }] });
 * const { png, width, warnings } = await svgToPng(svg, { width: 1440 });
 * console.log(png.length > 0, width, warnings); // true 1440 []
 * ```
 */
export async function svgToPng(svg: string, options: SvgToPngOptions = {}): Promise<PngImage> {
  checkOptions("svgToPng", SVG_TO_PNG_OPTIONS, options);
  if (options.width !== undefined && options.zoom !== undefined) {
    throw new OptionsError("svgToPng", [
      `options "width" (${options.width}) and "zoom" (${options.zoom}) both set the size; give one`,
    ]);
  }
  await ensureWasm();
  const { fonts, warning } = loadFonts(options.fontPath);
  const fitTo = options.width !== undefined
    ? { mode: "width" as const, value: options.width }
    : { mode: "zoom" as const, value: options.zoom ?? 1 };
  let renderer: InstanceType<typeof Resvg>;
  try {
    renderer = new Resvg(svg, {
      fitTo,
      background: options.background,
      font: { fontBuffers: fonts, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
    });
  } catch (err) {
    throw new Error(`resvg could not parse the SVG: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  try {
    const image = renderer.render();
    try {
      return {
        png: image.asPng(),
        width: image.width,
        height: image.height,
        warnings: warning ? [warning] : [],
      };
    } finally {
      image.free();
    }
  } finally {
    renderer.free();
  }
}

/** Options of {@link savePlot}. */
export interface SavePlotOptions {
  /** PNG width in px, a positive integer (default: twice the SVG's width, for sharp images on high-density screens). */
  width?: number;
  /** Font file for the PNG's text (see {@link svgToPng}). */
  fontPath?: string;
}

/** Files written by {@link savePlot}. */
export interface SavedPlot {
  /** Path of the SVG file. */
  svgPath: string;
  /** Path of the PNG file. */
  pngPath: string;
  /** Warnings from rendering the PNG. */
  warnings: string[];
}

/**
 * Write a plot as `<dir>/<name>.svg` and `<dir>/<name>.png`, each atomically, on a white background.
 *
 * @param dir Directory (created if missing).
 * @param name File name without extension.
 * @param svg The SVG text, e.g. from `linePlot`.
 * @param options PNG width and font.
 * @returns The paths written and any rendering warnings.
 *
 * @example
 * ```ts
 * import { savePlot } from "./png.ts";
 * import { barPlot } from "./plot.ts";
 * const dir = Deno.makeTempDirSync();
 * const svg = barPlot({ title: "accuracy", labels: ["LoRA", "PiSSA"], values: [0.81, 0.84] });
 * const { pngPath } = await savePlot(dir, "accuracy", svg);
 * ```
 */
export async function savePlot(
  dir: string,
  name: string,
  svg: string,
  options: SavePlotOptions = {},
): Promise<SavedPlot> {
  checkOptions("savePlot", SAVE_PLOT_OPTIONS, options);
  if (name === "" || name.includes("/") || name.includes("\\")) {
    throw new Error(`savePlot name must be a plain file name without extension, got "${name}"`);
  }
  const base = dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
  const image = await svgToPng(svg, {
    ...(options.width === undefined ? { zoom: 2 } : { width: options.width }),
    fontPath: options.fontPath,
    background: "white",
  });
  writeFileAtomicSync(`${base}.svg`, svg);
  writeFileAtomicSync(`${base}.png`, image.png);
  return { svgPath: `${base}.svg`, pngPath: `${base}.png`, warnings: image.warnings };
}
