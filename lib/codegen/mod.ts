/**
 * The compiler's data: the kernel description (`Kernel`, its expression tree `KExpr`) that scheduling and lowering
 * produce and every renderer and backend consumes.
 *
 * @module
 */
export type * from "./kexpr.ts";
