// Waiting for the first of several events with a deadline, the shape of every boot requirement's wait and of the
// waits behind them (an SSH connection, a login, the guest agent's link coming up): whichever comes first settles it,
// and every listener and the timer are removed however it ends.

export interface Outcome<T> {
  done(value: T): void;
  fail(err: Error): void;
}

/**
 * Resolves or rejects with the first outcome that `subscribe`'s listeners report; `subscribe` returns what removes
 * them. With `deadline`, fails with its error after `deadline.ms` unless settled before.
 */
export function firstOutcome<T>(
  subscribe: (outcome: Outcome<T>) => () => void,
  deadline?: { ms: number; error: () => Error },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let unsubscribe: (() => void) | null = null;
    let timer: NodeJS.Timeout | undefined;
    const settle = (finish: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      unsubscribe?.();
      finish();
    };
    const outcome: Outcome<T> = {
      done: (value) => settle(() => resolve(value)),
      fail: (err) => settle(() => reject(err)),
    };
    if (deadline) timer = setTimeout(() => outcome.fail(deadline.error()), deadline.ms);
    const remove = subscribe(outcome);
    // An outcome reported while subscribing (a promise that was settled already) removes the listeners now.
    if (settled) remove();
    else unsubscribe = remove;
  });
}
