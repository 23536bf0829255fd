//! What the numbers in KSAL events stand for: VPS ids and rule ids as the
//! names an administrator reads.
use std::collections::HashMap;

use crate::policy;

/// VPS names and rule names for the ids in KSAL events, read once per use.
#[derive(Debug, Clone, Default)]
pub struct EventNames {
    /// By VPS id: its name and the policy it runs under.
    pub(super) vps: HashMap<u32, (String, Option<String>)>,
    pub(super) rules: HashMap<u32, String>,
}

impl EventNames {
    pub fn vps(&self, vps_id: u32) -> Option<&str> {
        self.vps.get(&vps_id).map(|(n, _)| n.as_str())
    }

    /// The rule `rule_id` of VPS `vps_id`'s policy: a rule the host put
    /// in the maps, or a guard section of the policy.
    pub fn rule(&self, vps_id: u32, rule_id: u32) -> String {
        if rule_id == ksal_common::guard_rule::SPOOFED {
            // Not a policy's: every VPS is held to its own addresses.
            return "anti-spoofing".into();
        }
        self.rules
            .get(&rule_id)
            .cloned()
            .or_else(|| {
                let policy = self.vps.get(&vps_id)?.1.as_deref()?;
                policy::guard_rule_name(policy, rule_id)
            })
            .unwrap_or_else(|| format!("rule#{rule_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> EventNames {
        EventNames {
            vps: HashMap::from([(3, ("web".into(), Some("strict".into())))]),
            rules: HashMap::from([(7000, "strict:files.deny[0]".into())]),
        }
    }

    #[test]
    fn host_rules_are_named_by_the_rule_the_host_set() {
        assert_eq!(names().rule(3, 7000), "strict:files.deny[0]");
    }

    #[test]
    fn guard_rules_are_named_by_the_vps_policy_section() {
        assert_eq!(
            names().rule(3, ksal_common::guard_rule::BPF),
            "strict:kernel.bpf"
        );
    }

    #[test]
    fn unknown_ids_stay_visible_as_numbers() {
        let n = names();
        assert_eq!(n.rule(9, ksal_common::guard_rule::BPF), "rule#4");
        assert_eq!(n.rule(3, 123_456), "rule#123456");
        assert_eq!(n.vps(3), Some("web"));
        assert_eq!(n.vps(4), None);
    }

    #[test]
    fn spoofing_drops_are_named_whatever_the_policy() {
        let spoofed = ksal_common::guard_rule::SPOOFED;
        assert_eq!(names().rule(3, spoofed), "anti-spoofing");
        assert_eq!(names().rule(99, spoofed), "anti-spoofing");
    }
}
