use std::time::Duration;

use super::*;

#[test]
fn defaults_are_valid_and_local() {
    let s = Settings::from_toml("").unwrap();
    assert!(matches!(s.source, SourceSettings::Local(_)));
    assert_eq!(s.cache.ttl, Duration::from_secs(300));
}

#[test]
fn invalid_value_names_the_key() {
    let err = Settings::from_toml("[cache]\nttl = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cache.ttl"), "{err}");
    let err = Settings::from_toml("[server]\nlisten = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.listen"), "{err}");
    let err = Settings::from_toml("[server]\nblocking_threads = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.blocking_threads"), "{err}");
    let s = Settings::from_toml("[server]\nblocking_threads = 4\n").unwrap();
    assert_eq!(s.server.blocking_threads, 4);
    let err = Settings::from_toml("[jobs]\nname_prefix = \"bad prefix\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("jobs.name_prefix"), "{err}");
}

#[test]
fn unknown_keys_are_rejected() {
    let err = Settings::from_toml("[cache]\nttll = \"5m\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ttll"), "{err}");
}

#[test]
fn redacted_toml_round_trips() {
    let s = Settings::from_toml(
        "[recognition]\nlayers = [{label = \"large\", width = 640, height = 360}]\n\
         timing = { start = \"1s\", step = \"2s\" }\n\
         [auth]\napi = \"api-key\"\n\
         [[auth.api_keys]]\nname = \"frontend\"\nsha256 = \"{hex}\"\nroles = [\"api\"]\n"
            .replace("{hex}", &"ab".repeat(32))
            .as_str(),
    )
    .unwrap();
    let text = s.to_redacted_toml();
    let back = Settings::from_toml(&text).unwrap();
    assert_eq!(back.recognition.layers, s.recognition.layers);
    assert_eq!(back.recognition.timing, s.recognition.timing);
    assert_eq!(back.cache.ttl, s.cache.ttl);
    assert_eq!(back.auth.api_keys.len(), 1);
    assert_eq!(back.auth.api_keys[0].name, "frontend");
    assert!(matches!(back.source, SourceSettings::Local(_)));
}

#[test]
fn redacted_toml_round_trips_every_source_kind() {
    let storage = Settings::from_toml(
        "[source]\nkind = \"storage\"\ncatalog = \"catalog.csv\"\n[storage]\naccount = \"acct\"\n\
         auth = \"anonymous\"\n[links]\nmode = \"public\"\n",
    )
    .unwrap();
    let back = Settings::from_toml(&storage.to_redacted_toml()).unwrap();
    assert!(
        matches!(&back.source, SourceSettings::Storage(s) if s.catalog.as_deref() == Some(Path::new("catalog.csv")))
    );
}

#[test]
fn secrets_are_redacted_in_check_config() {
    let s = Settings::from_toml(
        "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"account-key\"\naccount_key = \"c2VjcmV0LWtleQ==\"\n[links]\nmode = \"account-key-sas\"\n[auth]\nallow_anonymous_signed_urls = true\n[credential]\nkind = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t-value\"\n",
    )
    .unwrap();
    let text = s.to_redacted_toml();
    assert!(!text.contains("c2VjcmV0LWtleQ=="), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!format!("{s:?}").contains("s3cr3t-value"));
}

#[test]
fn azure_settings_are_checked_together() {
    let base = "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\n";
    let err = |extra: &str| {
        Settings::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("endpoint = \"http://127.0.0.1:1/{account}\"\n[links]\nallow_http = true\n")
            .contains("must be https for Entra ID")
    );
    assert!(
        err("auth = \"account-key\"\n[links]\nmode = \"account-key-sas\"\n")
            .contains("storage.account_key")
    );
    assert!(
        err("auth = \"anonymous\"\nendpoint = \"http://127.0.0.1:1/{account}\"\n[links]\nmode = \"public\"\n")
            .contains("links.allow_http")
    );
    assert!(
        err("auth = \"anonymous\"\n[links]\nmode = \"public\"\nlifetime = \"1m\"\n")
            .contains("links.lifetime")
    );
    assert!(
        Settings::from_toml(&format!(
            "{base}auth = \"anonymous\"\n[links]\nmode = \"public\"\n"
        ))
        .is_ok()
    );
    let bad_account = Settings::from_toml(
        "[source]\nkind = \"storage\"\n[storage]\naccount = \"Bad_Account\"\nauth = \"anonymous\"\n[links]\nmode = \"public\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(bad_account.contains("storage.account"), "{bad_account}");
}

#[test]
fn link_windows_and_response_cache_control_are_checked() {
    let load = |auth: &str, links: &str| {
        Settings::from_toml(&format!(
            "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"{auth}\"\n\
             account_key = \"a2V5\"\n[auth]\nallow_anonymous_signed_urls = true\n[links]\n{links}"
        ))
    };
    let signed = |links: &str| {
        load(
            "account-key",
            &format!("mode = \"account-key-sas\"\n{links}"),
        )
    };
    let err = |r: Result<Settings, ConfigError>| r.unwrap_err().to_string();

    let ok = signed(
        "window = \"15m\"\nresponse_cache_control = \"public, max-age={max_age}, immutable\"\n",
    )
    .unwrap();
    assert_eq!(ok.links.window, Duration::from_secs(900));
    // Off by default: URLs anchored at each signing, no rscc.
    let default = signed("").unwrap();
    assert_eq!(default.links.window, Duration::ZERO);
    assert_eq!(default.links.response_cache_control, None);

    // lifetime >= window + min_validity (1h and 5m by default).
    assert!(signed("window = \"55m\"\n").is_ok());
    assert!(err(signed("window = \"56m\"\n")).contains("links.window"));
    assert!(
        err(signed(
            "window = \"10m\"\nlifetime = \"30m\"\n[cache]\nmin_validity = \"21m\"\n"
        ))
        .contains("links.window")
    );
    assert!(err(signed("window = \"1500ms\"\n")).contains("whole seconds"));
    // Only for the URLs this service signs.
    assert!(
        err(load("anonymous", "mode = \"public\"\nwindow = \"5m\"\n")).contains("links.window")
    );
    assert!(
        err(load(
            "anonymous",
            "mode = \"public\"\nresponse_cache_control = \"public\"\n"
        ))
        .contains("links.response_cache_control")
    );
    for bad in ["", "  ", "max-age={maxage}", "a\\nb", "caf\u{e9}"] {
        let e = err(signed(&format!("response_cache_control = \"{bad}\"\n")));
        assert!(e.contains("links.response_cache_control"), "{bad:?}: {e}");
    }
}

#[test]
fn public_base_url_follows_bound_port() {
    let s = Settings::default();
    let url = s.server.public_base_url("0.0.0.0:4321".parse().unwrap());
    assert_eq!(url.as_str(), "http://127.0.0.1:4321/");
}

#[test]
fn an_unset_credential_is_the_default_chain_where_entra_id_is_needed() {
    let load = |toml: &str| Settings::from_toml(toml).unwrap().credential;
    let storage = "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\n\
                   [auth]\nallow_anonymous_signed_urls = true\n";
    assert!(matches!(load(storage), Some(CredentialSettings::Default)));
    let public = format!("{storage}auth = \"anonymous\"\n[links]\nmode = \"public\"\n");
    assert!(load(&public.replace("[auth]\nallow_anonymous_signed_urls = true\n", "")).is_none());
    assert!(load("").is_none(), "local: no Azure at all");
    let ams = "[source]\nkind = \"ams\"\nsubscription_id = \"s\"\nresource_group = \"g\"\n\
               account_name = \"a\"\n[storage]\naccount = \"acct\"\n[auth]\n\
               allow_anonymous_signed_urls = true\n";
    assert!(matches!(load(ams), Some(CredentialSettings::Default)));
    let explicit = format!("{storage}[credential]\nkind = \"azure-cli\"\n");
    assert!(matches!(
        load(&explicit),
        Some(CredentialSettings::AzureCli { .. })
    ));
    let named = format!("{storage}[credential]\nkind = \"default\"\n");
    let settings = Settings::from_toml(&named).unwrap();
    assert!(matches!(
        settings.credential,
        Some(CredentialSettings::Default)
    ));
    let text = settings.to_redacted_toml();
    assert!(text.contains("[credential]\nkind = \"default\""), "{text}");
    assert!(Settings::from_toml(&text).is_ok(), "round trip");
}

#[test]
fn client_certificate_settings_and_their_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pfx-password");
    std::fs::write(&password_file, " pass phrase \n").unwrap();
    let base = "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\n[auth]\n\
                allow_anonymous_signed_urls = true\n[credential]\nkind = \"client-certificate\"\n\
                tenant_id = \"t\"\nclient_id = \"c\"\ncertificate_path = \"/etc/cert.pfx\"\n";
    let settings = Settings::from_toml(&format!(
        "{base}certificate_password_file = {password_file:?}\n"
    ))
    .unwrap();
    let Some(CredentialSettings::ClientCertificate {
        certificate_password: Some(password),
        send_certificate_chain: false,
        ..
    }) = &settings.credential
    else {
        panic!("{:?}", settings.credential);
    };
    assert_eq!(
        password.expose(),
        " pass phrase ",
        "as written, less the line break"
    );
    assert!(!settings.to_redacted_toml().contains("pass phrase"));
    assert!(!format!("{settings:?}").contains("pass phrase"));
    let both = Settings::from_toml(&format!(
        "{base}certificate_password = \"x\"\ncertificate_password_file = {password_file:?}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("credential.certificate_password_file"),
        "{both}"
    );
    let missing = Settings::from_toml(&base.replace("certificate_path = \"/etc/cert.pfx\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("certificate_path"), "{missing}");
}

#[test]
fn trusted_proxies_are_cidr_networks() {
    let s = Settings::from_toml("").unwrap();
    assert!(s.server.trusted_proxies.is_empty(), "none by default");
    let s = Settings::from_toml(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n",
    )
    .unwrap();
    let shown: Vec<String> = s
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
    assert!(s.to_redacted_toml().contains("\"10.0.0.0/8\""));
    for (value, reason) in [
        ("[\"10.0.0.1/8\"]", "host bits"),
        ("[\"lb.internal\"]", "not an IP address"),
        ("[\"10.0.0.0/40\"]", "0 to 32"),
    ] {
        let err = Settings::from_toml(&format!("[server]\ntrusted_proxies = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.trusted_proxies") && err.contains(reason),
            "{value}: {err}"
        );
    }
}
