/**
 * Which modules of a model a name pattern selects, as PEFT's `target_modules` does: by path suffix, by regular
 * expression, and under a model's second naming convention (Hugging Face names of a Llama model).
 *
 * @module
 */
import { Linear } from "./linear.ts";
import { asAliased, namedModules } from "./module.ts";

/** Whether module path `name` is selected by PEFT-style `key`. */
export function matchesKey(name: string, key: string): boolean {
  return name === key || name.endsWith(`.${key}`);
}

/** The names module `path` of `model` goes by: its path, and its second name where the model has one. */
export function moduleNames(model: object, path: string): string[] {
  const alias = asAliased(model)?.moduleAlias(path);
  return alias === undefined || alias === path ? [path] : [path, alias];
}

/**
 * The target modules of `model` under `cfg.targetModules`, as `[path, Linear]`. A model with a second naming
 * convention (`moduleAlias`, e.g. Hugging Face's `q_proj` for a Llama model's `wq`) matches under either name.
 */
export function findTargets(model: object, targets: readonly string[] | RegExp): [string, Linear][] {
  const out: [string, Linear][] = [];
  const re = targets instanceof RegExp ? new RegExp(`^(?:${targets.source})$`, targets.flags) : undefined;
  for (const [path, m] of namedModules(model)) {
    if (!(m instanceof Linear)) continue;
    const names = moduleNames(model, path);
    const hit = names.some((n) =>
      re !== undefined ? re.test(n) : (targets as readonly string[]).some((k) => matchesKey(n, k))
    );
    if (hit) out.push([path, m]);
  }
  return out;
}
