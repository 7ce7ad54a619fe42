//! The environment variables huggingface_hub honours. One test in its own binary: it sets
//! process-wide variables.

#[test]
fn hub_settings_follow_the_environment() {
    use rvpt::weights::HubSettings;
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", "/tmp/hf-home");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let s = HubSettings::from_env();
    assert_eq!(s.cache_dir, std::path::PathBuf::from("/tmp/hf-home/hub"));
    assert!(s.offline);
    std::env::set_var("HF_HUB_CACHE", "/tmp/hub-cache");
    std::env::set_var("HF_HUB_OFFLINE", "0");
    let s = HubSettings::from_env();
    assert_eq!(s.cache_dir, std::path::PathBuf::from("/tmp/hub-cache"));
    assert!(!s.offline);
}
