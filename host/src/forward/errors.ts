// Why the forward engine refuses an operator's request (`forward add`): an error class per kind, which the control
// API turns into its HTTP status (control/server.ts). The engine itself knows nothing of HTTP.
import type { ForwardSource } from '../model.js';

/** The forward cannot be made as asked (a host port below 1024, the VM's SSH port, one of the instance's files). */
export class ForwardRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ForwardRefusedError';
  }
}

/** An explicit forward that already exists, or one that holds what the new one would take. */
export class DuplicateForwardError extends Error {
  /** `what`: what the new forward would share with the existing one, when it is not the id. */
  constructor(instance: string, id: string, source: ForwardSource, what?: string) {
    super(
      `${what ? `${what} is already used by forward ${id}` : `forward ${id} already exists`} (${source}); ` +
        `remove it first: tether forward rm ${instance} '${id}'`,
    );
    this.name = 'DuplicateForwardError';
  }
}
