//! The role a node answers with in its status document: a data node's role in its epoch
//! (primary, spare, or fenced: an old primary that learned of a newer epoch), or monitor.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Spare,
    Fenced,
    Monitor,
}

impl NodeRole {
    /// The role as documents and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Spare => "spare",
            NodeRole::Fenced => "fenced",
            NodeRole::Monitor => "monitor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_written_and_read_as_its_name() {
        for role in [
            NodeRole::Primary,
            NodeRole::Spare,
            NodeRole::Fenced,
            NodeRole::Monitor,
        ] {
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, role.as_str());
            assert_eq!(serde_json::from_value::<NodeRole>(json).unwrap(), role);
        }
        assert!(serde_json::from_value::<NodeRole>("leader".into()).is_err());
    }
}
