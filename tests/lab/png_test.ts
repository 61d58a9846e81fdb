import assert from "node:assert/strict";
import { linePlot } from "../../lab/plot.ts";
import { savePlot, svgToPng } from "../../lab/png.ts";
import { TestRng } from "../_helpers.ts";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** A uniform generator for test `seed` (mixed with TEST_SEED, so every run draws fresh values). */
function rng(seed: number): () => number {
  const r = new TestRng(seed);
  return () => r.next();
}

/** Width and height from the IHDR chunk, which the PNG format requires to come first. */
function pngSize(bytes: Uint8Array): { width: number; height: number } {
  assert.deepEqual([...bytes.subarray(0, 8)], PNG_SIGNATURE, "PNG signature");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(new TextDecoder().decode(bytes.subarray(12, 16)), "IHDR");
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

function demoSvg(seed: number): string {
  const random = rng(seed);
  const x = Array.from({ length: 20 }, (_, i) => i);
  return linePlot({
    title: "PNG test",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "noise", x, y: x.map(() => random()) }],
    width: 600,
    height: 400,
  });
}

Deno.test("png: svgToPng gives PNG bytes whose decoded size matches the requested width", async () => {
  const random = rng(31);
  const svg = demoSvg(1);
  for (let trial = 0; trial < 3; trial++) {
    const width = 200 + Math.floor(random() * 800);
    const image = await svgToPng(svg, { width });
    const size = pngSize(image.png);
    assert.equal(size.width, width);
    assert.equal(image.width, width);
    assert.ok(Math.abs(size.height - (width * 400) / 600) <= 1, `height ${size.height} keeps the 3:2 aspect`);
    assert.equal(image.height, size.height);
  }
});

Deno.test("png: zoom scales the SVG's own size; a font is found on this machine", async () => {
  const image = await svgToPng(demoSvg(2), { zoom: 1.5 });
  assert.deepEqual(pngSize(image.png), { width: 900, height: 600 });
  assert.deepEqual(image.warnings, [], "a system font was found (fonts-dejavu-core is installed here)");
});

Deno.test("png: explicit font paths are checked; bad SVG and bad width are errors", async () => {
  await assert.rejects(
    () => svgToPng(demoSvg(3), { fontPath: "/nonexistent/font.ttf" }),
    /\/nonexistent\/font\.ttf/,
  );
  await assert.rejects(() => svgToPng("<svg", {}), /resvg could not parse/);
  await assert.rejects(
    () => svgToPng(demoSvg(3), { width: 0 }),
    /svgToPng: option "width" must be >= 1, got 0/,
  );
});

Deno.test("png: svgToPng and savePlot refuse unknown keys, a bad zoom and a width beside a zoom", async () => {
  const svg = demoSvg(5); // 600 × 400
  await assert.rejects(
    () => svgToPng(svg, { zoom: NaN }),
    /svgToPng: option "zoom" must be a finite number, got NaN/,
  );
  await assert.rejects(() => svgToPng(svg, { zoom: -1 }), /svgToPng: option "zoom" must be > 0, got -1/);
  await assert.rejects(
    () => svgToPng(svg, { width: 300, zoom: 2 }),
    /svgToPng: options "width" \(300\) and "zoom"/,
  );
  const typo = { widht: 300 } as never;
  await assert.rejects(() => savePlot(Deno.cwd(), "never", svg, typo), /savePlot: unknown option "widht"/);
  assert.deepEqual(pngSize((await svgToPng(svg, { zoom: 0.5 })).png), { width: 300, height: 200 });
});

Deno.test("png: savePlot writes name.svg and name.png and nothing else", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "png_test_" });
  try {
    const svg = demoSvg(4);
    const saved = await savePlot(`${dir}/plots`, "loss", svg, { width: 480 });
    assert.equal(saved.svgPath, `${dir}/plots/loss.svg`);
    assert.equal(saved.pngPath, `${dir}/plots/loss.png`);
    assert.equal(Deno.readTextFileSync(saved.svgPath), svg);
    assert.equal(pngSize(Deno.readFileSync(saved.pngPath)).width, 480);
    const names = [...Deno.readDirSync(`${dir}/plots`)].map((e) => e.name).sort();
    assert.deepEqual(names, ["loss.png", "loss.svg"]);
    const doubled = await savePlot(`${dir}/plots`, "default", svg);
    assert.equal(
      pngSize(Deno.readFileSync(doubled.pngPath)).width,
      1200,
      "default PNG is twice the SVG width",
    );
    await assert.rejects(() => savePlot(dir, "a/b", svg), /plain file name/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
