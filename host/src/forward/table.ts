// The forwards the engine keeps, by id, and the static and runtime port forwards among them (few, so that a guest
// listener's port finds them without a walk over every forward). An index only: forwards are made and dropped in
// lifecycle.ts, and what each one is decided by the module of its kind.
import type { Forward } from './forward.js';

export class ForwardTable {
  private readonly byId = new Map<string, Forward>();
  private readonly explicitPorts = new Set<Forward>();

  get(id: string): Forward | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Whether `f` is still the forward of its id: neither dropped nor made anew meanwhile. */
  holds(f: Forward): boolean {
    return this.byId.get(f.id) === f;
  }

  values(): IterableIterator<Forward> {
    return this.byId.values();
  }

  /** The static and runtime TCP and UDP forwards. */
  get explicit(): ReadonlySet<Forward> {
    return this.explicitPorts;
  }

  add(f: Forward): void {
    this.byId.set(f.id, f);
    if (f.source !== 'detected' && f.proto !== 'unix') this.explicitPorts.add(f);
  }

  delete(f: Forward): void {
    this.byId.delete(f.id);
    this.explicitPorts.delete(f);
  }

  clear(): void {
    this.byId.clear();
    this.explicitPorts.clear();
  }
}
