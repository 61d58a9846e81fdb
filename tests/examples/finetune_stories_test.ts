/**
 * The README's fine-tuning script (examples/finetune_stories.ts): when README.md holds it between
 * `<!-- finetune-script -->` and `<!-- /finetune-script -->`, the fenced block there is the file, character for
 * character, in a fence marked `ts ignore` (`deno test --doc` type-checks README blocks, and the script's
 * imports are relative to examples/); and the script runs with a few steps, on stories260K with a Gutenberg text (the default, from
 * ../shared/data) and on generated data (`--generated`, what it falls back to without ../shared/data),
 * printing a finite held-out loss before and a lower one after.
 */
import { equal, ok, throws } from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const SCRIPT = `${ROOT}examples/finetune_stories.ts`;
const hasData = (() => {
  try {
    return Deno.statSync(`${ROOT}../shared/data/models/stories260K/stories260K.bin`).isFile;
  } catch {
    return false;
  }
})();

/**
 * The fenced code block between the README markers (its info string, e.g. `ts ignore title="..."`, and its
 * body), or null when the README has no markers.
 */
function readmeScript(readme: string): { info: string; body: string } | null {
  const start = readme.indexOf("<!-- finetune-script -->");
  const end = readme.indexOf("<!-- /finetune-script -->");
  if (start < 0 && end < 0) return null;
  if (start < 0 || end < start) throw new Error("README.md: unmatched <!-- finetune-script --> markers");
  const block = /^(`{3,})([^\n]*)\n([\s\S]*?)^\1[ \t]*$/m.exec(readme.slice(start, end));
  if (block === null) throw new Error("README.md: no fenced code block between the finetune-script markers");
  return { info: block[2].trim(), body: block[3] };
}

/** Checks that the README's block (if any) is `file`, in a fence `deno test --doc` skips. */
function checkReadme(readme: string, file: string): boolean {
  const block = readmeScript(readme);
  if (block === null) return false;
  equal(block.body.trimEnd(), file.trimEnd(), "the README block differs from examples/finetune_stories.ts");
  // `deno test --doc` type-checks README blocks, and the script's imports are relative to examples/.
  ok(/^ts\b.*\bignore\b/.test(block.info), `mark the README fence "ts ignore", not "${block.info}"`);
  return true;
}

Deno.test("README: the finetune-script block (when present) is examples/finetune_stories.ts", () => {
  const file = Deno.readTextFileSync(SCRIPT);
  checkReadme(Deno.readTextFileSync(`${ROOT}README.md`), file);
  // The check itself, on README-like texts.
  const wrap = (fence: string, body: string) =>
    `# tessera\n\nintro\n\n<!-- finetune-script -->\n${fence}\n${body}\`\`\`\n<!-- /finetune-script -->\n`;
  ok(checkReadme(wrap('```ts ignore title="examples/finetune_stories.ts"', file), file));
  equal(checkReadme("no markers here", file), false);
  throws(() => checkReadme(wrap("```ts ignore", file.replace("rank: 4", "rank: 8")), file), /differs/);
  throws(() => checkReadme(wrap("```ts", file), file), /mark the README fence "ts ignore"/);
  throws(() => checkReadme("<!-- finetune-script -->\ntext\n<!-- /finetune-script -->", file), /no fenced/);
});

async function runScript(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-2000));
  const m = /loss before ([\d.]+), after ([\d.]+) \((\d+) steps; ([^)]*)\)/.exec(stdout);
  ok(m !== null, stdout);
  return { before: Number(m[1]), after: Number(m[2]), steps: Number(m[3]), data: m[4] };
}

Deno.test("examples/finetune_stories.ts --generated (its fallback without ../shared/data) lowers the loss", async () => {
  const r = await runScript(["--steps", "4", "--generated"]);
  equal(r.steps, 4);
  equal(r.data, "generated text, random model");
  // A random model starts near the uniform loss ln(vocabulary size) (a few dozen characters).
  ok(r.before > Math.log(20) && r.before < Math.log(100), `loss before ${r.before}`);
  ok(r.after < r.before, `loss ${r.before} -> ${r.after}`);
});

Deno.test({
  name: "examples/finetune_stories.ts fine-tunes stories260K on a Gutenberg text, lowering the held-out loss",
  ignore: !hasData,
  fn: async () => {
    const r = await runScript(["--steps", "4"]);
    equal(r.steps, 4);
    equal(r.data, "stories260K on ../shared/data/text/gutenberg/pg11.txt");
    // Pretrained: well below the uniform loss ln 512 over its 512 pieces.
    ok(r.before > 0.5 && r.before < Math.log(512) - 1, `loss before ${r.before}`);
    ok(r.after < r.before, `loss ${r.before} -> ${r.after}`);
  },
});
