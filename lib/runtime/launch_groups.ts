/**
 * Groups the steps of a prepared sequence into launches: steps that touch no common buffer in conflicting ways may
 * run in one dispatch (see `codegen/render_merged.ts`). A step goes into the earliest launch after every launch
 * holding a step it conflicts with (one writes a buffer the other reads or writes), so reads still see the writes
 * that came before them in the sequence and never the ones that came after, and two steps of one launch never touch
 * the same buffer unless both only read it. A launch binds each (buffer, range, element type) once and at most
 * `maxBindings` in all; conflicts are judged on whole buffers.
 *
 * @module
 */

/** How a step uses one buffer. */
export interface BufferUse {
  /** The buffer (compared by identity). */
  readonly buffer: object;
  /** The part of it bound, when not all of it (a range of one buffer is a binding of its own). */
  readonly range?: string;
  /** How the shader declares it (one binding per buffer and type). */
  readonly type: string;
  /** Whether the step writes it. */
  readonly write: boolean;
}

/** What grouping needs to know of a step. */
export interface GroupedStep {
  /** Every buffer the step binds. */
  readonly uses: readonly BufferUse[];
  /** Whether the step may share a launch (false: it launches alone). */
  readonly mergeable: boolean;
}

/** Limits of {@link launchGroups}. */
export interface LaunchLimits {
  /** Storage bindings one launch may have. */
  readonly maxBindings: number;
  /** Steps one launch may run. */
  readonly maxSteps: number;
}

interface Launch {
  readonly steps: number[];
  readonly reads: Set<object>;
  readonly writes: Set<object>;
  readonly bindings: Set<string>;
  readonly mergeable: boolean;
}

/** The launches, in order, each a list of step indices in sequence order (see the module comment). */
export function launchGroups(steps: readonly GroupedStep[], limits: LaunchLimits): number[][] {
  const ids = new Map<object, number>();
  const key = (u: BufferUse) => {
    let id = ids.get(u.buffer);
    if (id === undefined) {
      id = ids.size;
      ids.set(u.buffer, id);
    }
    return `${id}|${u.range ?? ""}|${u.type}|${u.write}`;
  };
  const launches: Launch[] = [];
  steps.forEach((s, i) => {
    const writes = s.uses.filter((u) => u.write).map((u) => u.buffer);
    const reads = s.uses.filter((u) => !u.write).map((u) => u.buffer);
    let earliest = 0;
    launches.forEach((l, j) => {
      if (writes.some((b) => l.reads.has(b) || l.writes.has(b)) || reads.some((b) => l.writes.has(b))) {
        earliest = j + 1;
      }
    });
    const keys = s.uses.map(key);
    let target: Launch | undefined;
    if (s.mergeable) {
      for (let j = earliest; j < launches.length && target === undefined; j++) {
        const l = launches[j];
        if (!l.mergeable || l.steps.length >= limits.maxSteps) continue;
        const added = new Set(keys.filter((k) => !l.bindings.has(k))).size;
        if (l.bindings.size + added <= limits.maxBindings) target = l;
      }
    }
    if (target === undefined) {
      target = {
        steps: [],
        reads: new Set(),
        writes: new Set(),
        bindings: new Set(),
        mergeable: s.mergeable,
      };
      launches.push(target);
    }
    target.steps.push(i);
    for (const b of reads) target.reads.add(b);
    for (const b of writes) target.writes.add(b);
    for (const k of keys) target.bindings.add(k);
  });
  return launches.map((l) => l.steps);
}
