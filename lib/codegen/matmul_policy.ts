/**
 * Which matmul kernel an adapter gets: a table of policies, matched against the adapter's description, each
 * choosing the template's blocking (and whether to stage tiles in workgroup memory) per product shape.
 *
 * - `software` (llvmpipe/lavapipe, SwiftShader, any fallback adapter), measured on lavapipe (bench:matmul,
 *   bench:peers): big register blocks read as vec4, never workgroup memory (a barrier costs ~1.5 µs there and
 *   saves nothing, since every "shared" load is as slow as a global one); narrow products get a tile that fits.
 * - `gpu with subgroups` (an adapter with the `subgroups` feature, when asked for with
 *   `TESSERA_SUBGROUP_MATMUL=1`): subgroup tiles (`renderMatmulSubgroup`) for narrow products. Unverified on real
 *   subgroups, so off by default.
 * - `gpu` (every other adapter): workgroup-shared 64 x 64 tiles (16 x 16 invocations, 4 x 4 each, k in steps of
 *   16) for products of at least 64 x 64, the register template for narrow ones. These are the textbook defaults
 *   for discrete GPUs; `deno task bench:gpu` times the variants on a real GPU and prints the measured choice to put
 *   in this table.
 *
 * @module
 */
import { CPU_TILE, GPU_SHARED_TILE, GPU_SUBGROUP_TILE, type MatmulTile } from "../../kernels/matmul.wgsl.ts";

/** What a policy sees of the adapter. */
export interface AdapterTraits {
  /** Adapter description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H100 80GB HBM3"). */
  readonly description: string;
  /** True for a software fallback adapter. */
  readonly isFallback: boolean;
  /**
   * True when the device was created with the `subgroups` feature for the matmul (the adapter has it and the user
   * asked for it: `TESSERA_SUBGROUP_MATMUL=1`). Default false.
   */
  readonly subgroups?: boolean;
}

/** Whether an adapter runs shaders on the CPU (llvmpipe/lavapipe, SwiftShader, any fallback adapter). */
export function isSoftwareAdapter(a: AdapterTraits): boolean {
  return a.isFallback || /llvmpipe|lavapipe|swiftshader|software/i.test(a.description);
}

/** A matmul policy: its name and its choice of blocking for a product `[batch] m x k · k x n`. */
export interface MatmulPolicy {
  /** Name (printed by benchmarks). */
  readonly name: string;
  /** The template's blocking for this product (`bk` set: the workgroup-shared variant). */
  choose(m: number, n: number, k: number): MatmulTile;
}

/**
 * A tile for products that are narrow in N (LoRA's rank-r sides, attention's head dimension): each invocation
 * covers up to 8 columns, so narrow outputs keep every invocation busy and still do tm·tn FMAs per tm+tn loads.
 */
export function fitTile(m: number, n: number): MatmulTile {
  const tn = Math.min(8, Math.max(1, n));
  const wn = Math.max(1, Math.min(8, Math.floor(n / tn)));
  const tm = m >= 64 ? 8 : 4;
  const wm = Math.max(1, Math.min(Math.floor(64 / wn), Math.ceil(m / tm)));
  return { tm, tn, wm, wn };
}

/** Register blocking as measured on llvmpipe: big blocks for big products, a fitting tile for narrow ones. */
export const SOFTWARE_POLICY: MatmulPolicy = {
  name: "software (register-blocked, vec4 reads)",
  choose(m, n) {
    const big = m * n >= 256 * 256 && n >= 64 && m >= 64;
    return big ? CPU_TILE : fitTile(m, n);
  },
};

/** Workgroup-shared tiles for products of at least 64 x 64, the register template for narrow ones. */
export const GPU_POLICY: MatmulPolicy = {
  name: "gpu (workgroup-shared 64x64 tiles)",
  choose(m, n) {
    return m >= 64 && n >= 64 ? GPU_SHARED_TILE : fitTile(m, n);
  },
};

/**
 * Subgroup tiles for narrow products (the rows of a workgroup share A through shuffles), workgroup-shared tiles
 * for wide ones. Not measured on any GPU yet, and never verified with real subgroups (lavapipe has none: the tests
 * run the variant with emulated shuffles), so it is chosen only when asked for (see {@link AdapterTraits}).
 */
export const GPU_SUBGROUP_POLICY: MatmulPolicy = {
  name: "gpu with subgroups (subgroup tiles for narrow products, shared 64x64 tiles for wide ones)",
  choose(m, n, k) {
    return m >= 64 && n >= 64 ? GPU_SHARED_TILE : n >= 16 ? GPU_SUBGROUP_TILE : GPU_POLICY.choose(m, n, k);
  },
};

/** The policy table, first match wins. */
export const MATMUL_POLICIES: readonly {
  readonly matches: (a: AdapterTraits) => boolean;
  readonly policy: MatmulPolicy;
}[] = [
  { matches: isSoftwareAdapter, policy: SOFTWARE_POLICY },
  { matches: (a) => a.subgroups === true, policy: GPU_SUBGROUP_POLICY },
  { matches: () => true, policy: GPU_POLICY },
];

/**
 * The matmul policy of an adapter (the first entry of {@link MATMUL_POLICIES} that matches).
 *
 * @example
 * ```ts
 * import { matmulPolicyFor } from "./matmul_policy.ts";
 * console.log(matmulPolicyFor({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallback: true }).name);
 * console.log(matmulPolicyFor({ description: "NVIDIA H100 80GB HBM3", isFallback: false }).choose(4096, 4096, 4096));
 * ```
 */
export function matmulPolicyFor(a: AdapterTraits): MatmulPolicy {
  return MATMUL_POLICIES.find((e) => e.matches(a))!.policy;
}
