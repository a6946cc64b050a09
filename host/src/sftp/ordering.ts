// Arrival-order execution for one SFTP session. Exclusive tasks (anything with an effect, and anything that
// allocates or releases a handle) run one at a time, after every task that arrived before them; shared tasks
// (pure reads: READ on an open handle, STAT, REALPATH, ...) run after every earlier exclusive task but overlap
// with each other. So sshfs's pipelined OPEN(CREAT)+LSTAT of the same name sees the file, while readahead READs
// of a big file are served in parallel.

type Task = () => Promise<void>;

const ignore = () => {};

export class ArrivalOrder {
  /** Settles when every exclusive task that has arrived so far (and the shared ones before it) has finished. */
  private barrier: Promise<void> = Promise.resolve();
  /** Shared tasks that arrived after the last exclusive one and may still be running. */
  private readonly shared = new Set<Promise<void>>();
  /** Tasks handed in and not yet finished. */
  private pending = 0;

  /** True when every task handed in has finished: a task that completes synchronously may then just run. */
  get settled(): boolean {
    return this.pending === 0;
  }

  exclusive(task: Task): void {
    const prior = this.shared.size === 0 ? this.barrier : Promise.all([this.barrier, ...this.shared]);
    this.shared.clear();
    this.barrier = prior.then(this.counted(task)).catch(ignore);
  }

  concurrent(task: Task): void {
    const p = this.barrier.then(this.counted(task)).catch(ignore);
    this.shared.add(p);
    p.then(() => this.shared.delete(p));
  }

  private counted(task: Task): Task {
    this.pending++;
    return () =>
      task().finally(() => {
        this.pending--;
      });
  }

  /** Settles once everything that has arrived so far has finished. */
  idle(): Promise<void> {
    return Promise.all([this.barrier, ...this.shared]).then(ignore);
  }
}
