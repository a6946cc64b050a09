// Public surface of the agent link protocol shared by tether and tether-guest.
export * from './errors.js';
export { DEFAULT_MAX_FRAME, decodePayload, encodeFrame, FrameDecoder } from './frame.js';
export * from './messages.js';
export { Peer, type PeerOptions } from './peer.js';
export { validate } from './validate.js';
