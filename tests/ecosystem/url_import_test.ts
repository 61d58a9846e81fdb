/**
 * A script anywhere imports mod.ts by URL, with no import map and no deno.json: the repository is served on
 * 127.0.0.1 by a small static server, and a script in a temporary directory outside the repository imports it over
 * HTTP and runs a matmul and a gradient.
 */
import { equal, match } from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function contentType(path: string): string {
  if (path.endsWith(".ts")) return "application/typescript; charset=utf-8";
  if (path.endsWith(".json")) return "application/json";
  return "application/octet-stream";
}

Deno.test("mod.ts imports over HTTP from a directory outside the repository", async () => {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      if (path.includes("..")) return new Response("bad path", { status: 400 });
      try {
        const body = await Deno.readFile(ROOT + path.slice(1));
        return new Response(body, { headers: { "content-type": contentType(path) } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const dir = await Deno.makeTempDir();
    const script = `${dir}/use_tessera.ts`;
    await Deno.writeTextFile(
      script,
      `import { pissaInit, tensor, valueAndGrad } from "${base}/mod.ts";
const a = tensor([[1, 2], [3, 4]]);
const b = tensor([[5, 6], [7, 8]]);
console.log("matmul", (await a.matmul(b).data()).join(","));
const { grads } = valueAndGrad((p: { w: typeof a }) => p.w.square().sum())({ w: a });
console.log("grad", (await grads.w.data()).join(","));
const w = tensor([[3, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 0]]);
const p = await pissaInit(w, { rank: 1 });
console.log("pissa", (await p.b.matmul(p.a).mul(p.scale).data()).join(","));
`,
    );
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", "--reload=" + base, script],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    });
    const { code, stdout, stderr } = await cmd.output();
    const out = new TextDecoder().decode(stdout);
    equal(code, 0, new TextDecoder().decode(stderr));
    match(out, /matmul 19,22,43,50/); // [[1,2],[3,4]]·[[5,6],[7,8]]
    match(out, /grad 2,4,6,8/); // d/dw Σw² = 2w
    // PiSSA's rank-1 part of diag(3, 2, 1) (padded to 4×3) is its top singular triplet: 3 at (0, 0).
    match(out, /pissa 3(\.0+)?,0,0,0,0,0,0,0,0,0,0,0/);
    await Deno.remove(dir, { recursive: true });
  } finally {
    ac.abort();
    await server.finished;
  }
});
