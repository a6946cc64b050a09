// Errors of the agent link. Each names what went wrong precisely enough to act on from a log line alone.

/** A message (or frame) broke the protocol: bad framing, undecodable msgpack, or a shape that failed validation. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

/** The other side's hello names another protocol version: nothing else it sends can be read. */
export class ProtocolVersionError extends ProtocolError {
  override name = 'ProtocolVersionError';
}

/** A message failed schema validation; `field` is the dotted path of the first bad field (e.g. `d.added.3.port`). */
export class ValidationError extends ProtocolError {
  override name = 'ValidationError';
  constructor(
    readonly what: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`invalid ${what}: field ${field || '(root)'}: ${reason}`);
  }
}

/** A frame announced a length above the configured maximum; rejected before any of it was buffered. */
export class FrameTooLargeError extends ProtocolError {
  override name = 'FrameTooLargeError';
  constructor(
    readonly length: number,
    readonly max: number,
  ) {
    super(`frame of ${length} bytes exceeds the maximum of ${max} bytes`);
  }
}

/** The link closed while a request was pending (or a request was made on a closed link). */
export class LinkClosedError extends Error {
  override name = 'LinkClosedError';
  constructor(readonly reason: string) {
    super(`agent link closed: ${reason}`);
  }
}

/** A request got no response within its timeout. */
export class RequestTimeoutError extends Error {
  override name = 'RequestTimeoutError';
  constructor(
    readonly method: string,
    readonly timeoutMs: number,
  ) {
    super(`request ${method} timed out after ${timeoutMs} ms`);
  }
}

/** The remote side answered a request with an error. */
export class RemoteError extends Error {
  override name = 'RemoteError';
  constructor(
    readonly method: string,
    readonly code: string,
    message: string,
  ) {
    super(`${method} failed remotely (${code}): ${message}`);
  }
}
