//! The compiled KSAL programs, built by build.rs from `ksal-ebpf` and
//! embedded in vzhost; its tests check them against `ksal-common`'s hook
//! table and map names, so the two sides cannot drift apart unnoticed.

pub(super) static KSAL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ksal"));

#[cfg(test)]
mod tests {
    use aya_obj::{Object, ProgramSection};
    use ksal_common::{Attach, HOOKS, map_names, program_names};

    use super::KSAL_OBJECT;

    /// The map aya-log's kernel side adds for the programs' own log.
    const LOG_MAP: &str = "AYA_LOGS";

    fn object() -> Object {
        Object::parse(KSAL_OBJECT).expect("the embedded KSAL object parses")
    }

    #[test]
    fn every_program_the_hook_table_names_is_in_the_object_as_its_kind() {
        let obj = object();
        for hook in &HOOKS {
            for p in hook.programs {
                let program = obj
                    .programs
                    .get(p.name)
                    .unwrap_or_else(|| panic!("{} ({}) is missing", p.name, hook.name));
                let fits = match (p.attach, &program.section) {
                    (Attach::Lsm { .. }, ProgramSection::Lsm { sleepable }) => !sleepable,
                    (Attach::Cgroup { .. }, s) => matches!(
                        s,
                        ProgramSection::CgroupSkb { .. }
                            | ProgramSection::CgroupSockAddr { .. }
                            | ProgramSection::CgroupDevice
                            | ProgramSection::CgroupSysctl
                    ),
                    (Attach::Tc, ProgramSection::SchedClassifier) => true,
                    _ => false,
                };
                assert!(
                    fits,
                    "{} is {:?}, the table says {:?}",
                    p.name, program.section, p.attach
                );
            }
        }
        assert!(
            matches!(
                obj.programs
                    .get(program_names::CGROUP_PROBE)
                    .map(|p| &p.section),
                Some(ProgramSection::CgroupSkb { .. })
            ),
            "doctor's probe program"
        );
    }

    #[test]
    fn the_object_has_no_program_the_host_would_leave_unattached() {
        let obj = object();
        let known = |name: &str| {
            name == program_names::CGROUP_PROBE
                || HOOKS
                    .iter()
                    .any(|h| h.programs.iter().any(|p| p.name == name))
        };
        let unknown: Vec<&String> = obj.programs.keys().filter(|n| !known(n)).collect();
        assert!(
            unknown.is_empty(),
            "not in ksal-common's hook table: {unknown:?}"
        );
    }

    #[test]
    fn every_map_the_host_pins_is_in_the_object_and_no_other() {
        let obj = object();
        for name in map_names::ALL {
            assert!(obj.maps.contains_key(name), "map {name} is missing");
        }
        // Sections of global data (.bss, .rodata...) are maps to aya too.
        let unknown: Vec<&String> = obj
            .maps
            .keys()
            .filter(|n| {
                !n.starts_with('.') && *n != LOG_MAP && !map_names::ALL.contains(&n.as_str())
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "not in ksal-common's map names: {unknown:?}"
        );
        assert!(
            obj.maps.contains_key(LOG_MAP),
            "the kernel log's ring buffer"
        );
    }
}
