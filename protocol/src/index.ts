// Public surface of the agent link protocol shared by tether and tether-guest.

export { BudgetExceededError, checkBudget, type ValueBudget } from './budget.js';
export { DropLog, type WarnLogger } from './drop-log.js';
export * from './errors.js';
export { DEFAULT_MAX_FRAME, decodePayload, encodeFrame, FrameDecoder, type FrameLimits, INCOMPLETE } from './frame.js';
export * from './messages.js';
export { Peer, type PeerOptions, REMOTE_ENDED } from './peer.js';
export { BIDI, escapeChar, remoteText } from './remote-text.js';
export { validate } from './validate.js';
