/**
 * The intermediate representation: the closed set of primitives ({@link Op}) with the argument each carries,
 * and the immutable, hash-consed nodes tensors build.
 *
 * @module
 */
export type { DeviceName, Node, Storage } from "./node.ts";
export { type CustomVjpArg, Op, type OpArgs } from "./ops.ts";
