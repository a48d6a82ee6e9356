// The vocabulary of hoinghi signaling v1 (docs/signaling.md) that the client acts on.

export const PROTOCOL = 1;

// Error codes after which retrying with the same token cannot succeed.
export const FATAL_ERRORS = new Set([
  "token_missing", "token_invalid", "token_expired", "wrong_room", "unsupported_protocol",
  "replaced",
]);
// Close codes that mean the same when no error message told us more (4001 is also used for
// join_timeout, which is transient, so the error code wins when we have one).
export const FATAL_CLOSES = new Set([4001, 4002, 4009]);
// Publish errors that a retry cannot fix.
export const PUBLISH_REFUSALS = new Set(["bad_sdp", "forbidden"]);
// Server events whose handling is built in; any other type is re-emitted under its own name,
// which is how not-yet-specified messages (`floor`, `participant_quality`...) reach the views.
export const ROSTER_EVENTS = new Set([
  "participant_joined", "participant_left", "track_published", "track_unpublished", "track_muted",
  "presence",
]);

export class SignalingError extends Error {
  constructor(code, message, fatal = FATAL_ERRORS.has(code)) {
    super(message || code);
    this.code = code;
    this.fatal = fatal;
  }
}

export function trackParticipant(trackId) {
  return trackId.slice(0, trackId.lastIndexOf("/"));
}
