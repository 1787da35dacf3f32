//! [`Reason`]: why a [`Decision`](super::Decision) was made, cheap to hand out per request.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The reason of a decision: a static string, a shared precomputed string, or an owned one.
///
/// A rule set computes each rule's reason once, when the rule is built, and every decision
/// shares it: an `Arc` clone, no allocation per request.
///
/// ```
/// use std::sync::Arc;
/// use tower_mtls::authorize::Reason;
///
/// let fixed = Reason::from("no rule matched");          // &'static str: free
/// let shared = Reason::from(Arc::<str>::from("rule \"admin\" allows")); // Arc clone per use
/// let built = Reason::from(format!("{} pending", 3));   // String: allocated by the caller
/// assert_eq!(fixed, "no rule matched");
/// assert_eq!(shared.as_str(), "rule \"admin\" allows");
/// assert_eq!(built.to_string(), "3 pending");
/// ```
#[derive(Clone)]
pub struct Reason(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
    // A rule's reason: its text and the rule's name, in one allocation shared by every
    // decision the rule makes.
    Rule(Arc<RuleReason>),
}

struct RuleReason {
    name: Arc<str>,
    text: Box<str>,
}

impl Reason {
    /// The reason as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
            Repr::Owned(s) => s,
            Repr::Rule(r) => &r.text,
        }
    }

    /// The name of the policy rule that made the decision, when a [`Rule`](super::Rule) made
    /// it (the `rule` label of the crate's metrics).
    pub fn rule(&self) -> Option<&str> {
        match &self.0 {
            Repr::Rule(r) => Some(&r.name),
            _ => None,
        }
    }

    /// The reason of rule `name`.
    pub(crate) fn of_rule(name: Arc<str>, text: String) -> Self {
        Reason(Repr::Rule(Arc::new(RuleReason {
            name,
            text: text.into_boxed_str(),
        })))
    }

    /// The rule's name as the shared string it was built with.
    pub(crate) fn rule_name(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Repr::Rule(r) => Some(&r.name),
            _ => None,
        }
    }
}

impl Reason {
    /// Whether the text is a `&'static str` (and so costs nothing to keep).
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }
}

impl Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Reason {
    fn from(s: &'static str) -> Self {
        Reason(Repr::Static(s))
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Self {
        Reason(Repr::Owned(s))
    }
}

impl From<Arc<str>> for Reason {
    fn from(s: Arc<str>) -> Self {
        Reason(Repr::Shared(s))
    }
}

impl From<Cow<'static, str>> for Reason {
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(s) => s.into(),
            Cow::Owned(s) => s.into(),
        }
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Reason {}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
