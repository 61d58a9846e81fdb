/**
 * The shape of the tree: the lines of each top-level folder stay within its budget (the counts are printed), no two
 * files of the library or the lab import each other through any chain (type imports included), imports run one way (`lib ← lab ← {experiments, bench, cli, examples}`: the library imports nothing above it, and the lab
 * uses the library through `mod.ts` as any user does), the library's module graph holds none of the lab's
 * packages (YAML, resvg), no library file casts through `unknown`, and no source file is empty.
 */
import { deepEqual, ok } from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/**
 * Lines of source (`.ts`, `.py`) per top-level folder, fixtures excluded. A budget is a little above the folder's
 * size: growing past it means deciding that the folder should grow (and raising it here), not drifting.
 */
const BUDGETS: Record<string, number> = {
  lib: 37_890,
  lab: 8_620,
  experiments: 4_915,
  bench: 4_400,
  kernels: 2_450,
  cli: 850,
  tools: 1_950,
  examples: 120,
  tests: 31_170,
};

/** Every file under `dir` (relative to the root), recursively. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${ROOT}${dir}`)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...filesUnder(path));
    else if (e.isFile) out.push(path);
  }
  return out;
}

function lineCount(path: string): number {
  const text = Deno.readTextFileSync(`${ROOT}${path}`);
  return text.length === 0 ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

Deno.test("every top-level folder stays within its line budget", () => {
  const rows: string[] = [];
  const over: string[] = [];
  for (const [dir, budget] of Object.entries(BUDGETS)) {
    const files = filesUnder(dir).filter((f) => /\.(ts|py)$/.test(f) && !f.includes("/fixtures/"));
    const lines = files.reduce((sum, f) => sum + lineCount(f), 0);
    rows.push(`  ${dir.padEnd(12)} ${String(lines).padStart(6)} of ${budget} lines (${files.length} files)`);
    if (lines > budget) over.push(`${dir}/ has ${lines} lines, over its budget of ${budget}`);
  }
  console.log(`lines per folder:\n${rows.join("\n")}`);
  deepEqual(over, []);
});

Deno.test("no source file (.ts, .py) at the root or in a top-level folder is empty", () => {
  const root = [...Deno.readDirSync(ROOT)].filter((e) => e.isFile).map((e) => e.name);
  const files = [...root, ...Object.keys(BUDGETS).flatMap(filesUnder)].filter((f) => /\.(ts|py)$/.test(f));
  const empty = files.filter((f) => Deno.readTextFileSync(`${ROOT}${f}`).trim() === "");
  deepEqual(empty, []);
});

/** The relative import specifiers of a TypeScript source, comments (and the examples in them) left out. */
function importsOf(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g)) out.push(m[1]);
  return out;
}

/** `spec` imported by `file` (both relative to the root), as a root-relative path. */
function resolve(file: string, spec: string): string {
  const parts = file.split("/").slice(0, -1);
  for (const seg of spec.split("/")) {
    if (seg === "..") parts.pop();
    else if (seg !== ".") parts.push(seg);
  }
  return parts.join("/");
}

Deno.test("imports run one way: the library never imports the lab, experiments, benches, tools or tests", () => {
  // A check of the check: an import in a comment (a doc example) is not one; real ones are found.
  deepEqual(importsOf('/**\n * import { x } from "../lab/mod.ts";\n */\nimport { y } from "./y.ts";\n'), [
    "./y.ts",
  ]);
  deepEqual(importsOf('export { z } from "../z.ts";\nconst m = await import("./m.ts");\n'), [
    "../z.ts",
    "./m.ts",
  ]);
  const above: Record<string, string[]> = {
    lib: ["lab", "experiments", "bench", "tests", "tools", "cli", "examples"],
    lab: ["experiments", "bench", "tests", "tools", "cli", "examples"],
  };
  const wrong: string[] = [];
  for (const [dir, forbidden] of Object.entries(above)) {
    for (const file of filesUnder(dir).filter((f) => f.endsWith(".ts"))) {
      for (const spec of importsOf(Deno.readTextFileSync(`${ROOT}${file}`))) {
        const target = resolve(file, spec);
        const top = target.split("/")[0];
        if (forbidden.includes(top)) wrong.push(`${file} imports ${target}`);
      }
    }
  }
  deepEqual(wrong, []);
});

/** The strongly connected components of more than one file (Tarjan), each sorted. */
function cycles(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

Deno.test("no import cycle: no two files of the library or the lab reach each other", () => {
  // A check of the check: a three-file loop is found, a chain is not.
  deepEqual(cycles(new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]])), [["a", "b", "c"]]);
  const files = ["mod.ts", ...filesUnder("lib"), ...filesUnder("lab")].filter((f) => f.endsWith(".ts"));
  const graph = new Map(
    files.map((f) => [f, importsOf(Deno.readTextFileSync(`${ROOT}${f}`)).map((spec) => resolve(f, spec))]),
  );
  deepEqual(cycles(graph), []);
});

Deno.test("the lab uses the library through its public entry point (mod.ts) only", () => {
  const deep = filesUnder("lab").filter((f) => f.endsWith(".ts")).flatMap((file) =>
    importsOf(Deno.readTextFileSync(`${ROOT}${file}`)).map((spec) => resolve(file, spec))
      .filter((target) => target.startsWith("lib/")).map((target) => `${file} imports ${target}`)
  );
  deepEqual(deep, []);
});

Deno.test("the library asserts no type through unknown: no double cast in lib/ (DESIGN.md §3 item 11)", () => {
  // A static shape that is asserted rather than derived goes through the one helper that says so (`withShape`).
  const casts = filesUnder("lib").filter((f) => f.endsWith(".ts")).flatMap((file) =>
    Deno.readTextFileSync(`${ROOT}${file}`).split("\n").flatMap((line, i) =>
      line.includes("as unknown as") ? [`${file}:${i + 1}: ${line.trim()}`] : []
    )
  );
  deepEqual(casts, []);
});

Deno.test("the library's module graph holds no YAML or plotting package; the lab's does", async () => {
  const npmOf = async (entry: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    ok(out.success, new TextDecoder().decode(out.stderr));
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: { kind?: string; npmPackage?: string }[];
    };
    return info.modules.filter((m) => m.kind === "npm").map((m) => m.npmPackage!.replace(/@[^@]*$/, ""));
  };
  const lib = await npmOf("mod.ts");
  deepEqual(lib.filter((p) => p === "yaml" || p.startsWith("@resvg/")), [], `mod.ts loads ${lib.join(", ")}`);
  const lab = await npmOf("lab/mod.ts");
  ok(lab.includes("yaml") && lab.includes("@resvg/resvg-wasm"), `lab/mod.ts loads ${lab.join(", ")}`);
});
