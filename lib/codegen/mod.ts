/**
 * The compiler's data: the kernel description (`Kernel`, its expression tree `KExpr`) that scheduling and lowering
 * produce and every renderer and backend consumes, and the per-adapter choices of matmul tiles and of which kernels
 * share a launch.
 *
 * @module
 */
export type * from "./kexpr.ts";
export { type AdapterTraits, type MatmulPolicy, matmulPolicyFor } from "./matmul_policy.ts";
export { type LaunchPolicy, launchPolicyFor } from "./launch_policy.ts";
export type { MatmulTile } from "../../kernels/matmul.wgsl.ts";
