//! The `PathNormalization` a fuzz input's first byte selects, shared by the targets that
//! canonicalize paths: every combination of the five settings is reachable.

use tower_mtls::authorize::canonical::{
    DotSegments, EncodedUnreserved, EscapedSlashesAction, MergeSlashes, PathNormalization,
    PathParameters,
};

/// The settings for `selector`.
pub fn settings(selector: u8) -> PathNormalization {
    let bit = |n: u8| (selector / 3) & (1 << n) != 0;
    PathNormalization::default()
        .merge_slashes(match selector % 3 {
            0 => MergeSlashes::Reject,
            1 => MergeSlashes::Merge,
            _ => MergeSlashes::KeepUnchanged,
        })
        .path_with_escaped_slashes_action(if bit(0) {
            EscapedSlashesAction::KeepUnchanged
        } else {
            EscapedSlashesAction::RejectRequest
        })
        .encoded_unreserved(if bit(1) {
            EncodedUnreserved::Decode
        } else {
            EncodedUnreserved::Reject
        })
        .dot_segments(if bit(2) {
            DotSegments::Resolve
        } else {
            DotSegments::Reject
        })
        .path_parameters(if bit(3) {
            PathParameters::Keep
        } else {
            PathParameters::Reject
        })
}

