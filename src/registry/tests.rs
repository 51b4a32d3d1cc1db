use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn policy() -> Policy {
    Policy {
        ttl_default: Duration::from_secs(10),
        ttl_min: Duration::from_secs(3),
        ttl_max: Duration::from_secs(3600),
        max_registrations: 2,
        allow: default_allow(),
        tokens: vec![Secret::from_text("scoped")],
    }
}

fn store() -> Registry {
    let r = Registry::default();
    r.configure(Some("prod".into()), vec![("web".into(), policy())]);
    r
}

fn reg(address: &str, port: u32) -> Registration {
    Registration {
        address: address.into(),
        port,
        environment: Some("prod".into()),
        ..Registration::default()
    }
}

/// Registers `id` at `address:80` into `web` as a lease of the default TTL, from now.
fn lease_now(r: &Registry, id: &str, address: &str) {
    r.register("web", id, &reg(address, 80), Hold::Lease, Instant::now())
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lease_lapses_after_its_ttl_and_wakes_the_daemon() {
    let r = store();
    let mut with_ttl = reg("10.0.0.1", 80);
    with_ttl.ttl = Some(Ttl::Text("5s".into()));
    let view = r
        .register("web", "a", &with_ttl, Hold::Lease, Instant::now())
        .unwrap();
    assert_eq!(view.ttl_seconds, Some(5.0));
    assert_eq!(r.changed().await, vec!["web".to_string()]);
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
    let started = Instant::now();
    assert_eq!(r.changed().await, vec!["web".to_string()]);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(r.backends("web", Instant::now()).is_empty());
    assert_eq!(
        r.renew("web", "a", Instant::now()),
        Err(RegistryError::UnknownLease {
            service: "web".into(),
            id: "a".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn renewing_keeps_a_lease_and_wakes_nobody() {
    let r = store();
    lease_now(&r, "a", "10.0.0.1");
    r.changed().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if r.register(
            "web",
            "a",
            &reg("10.0.0.1", 80),
            Hold::Lease,
            Instant::now(),
        )
        .is_err()
        {
            panic!("renewal refused");
        }
        r.renew("web", "a", Instant::now()).unwrap();
    }
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
    // Nothing changed: the sweep runs when the lease lapses, 10 s after the last renewal.
    let started = Instant::now();
    r.changed().await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_drain_keeps_the_backend_with_weight_zero_then_removes_it() {
    let r = store();
    lease_now(&r, "a", "10.0.0.1");
    r.changed().await;
    r.deregister("web", "a", Some(Duration::from_secs(30)), Instant::now())
        .unwrap();
    r.changed().await;
    let b = r.backends("web", Instant::now());
    assert_eq!((b.len(), b[0].weight), (1, 0));
    let started = Instant::now();
    r.changed().await;
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(r.backends("web", Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn refusals_name_the_problem_and_store_nothing() {
    let r = store();
    let now = Instant::now();
    let mut staging = reg("10.0.0.1", 80);
    staging.environment = Some("staging".into());
    let e = r
        .register("web", "a", &staging, Hold::Lease, now)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment `staging` does not match this daemon's environment `prod`"
    );
    let e = r
        .register("web", "a", &reg("8.8.8.8", 80), Hold::Lease, now)
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotAllowed { .. }), "{e}");
    let e = r
        .register("web", "a", &reg("::ffff:8.8.8.8", 80), Hold::Lease, now)
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotAllowed { .. }), "{e}");
    let e = r
        .register("web", "a", &reg("web.example", 80), Hold::Lease, now)
        .unwrap_err();
    assert!(e.to_string().starts_with("`address`: "), "{e}");
    let e = r
        .register("web", "a", &reg("10.0.0.1", 70000), Hold::Lease, now)
        .unwrap_err();
    assert!(e.to_string().starts_with("`port`: 70000"), "{e}");
    let mut short = reg("10.0.0.1", 80);
    short.ttl = Some(Ttl::Seconds(1));
    let e = r
        .register("web", "a", &short, Hold::Lease, now)
        .unwrap_err();
    assert_eq!(e.to_string(), "`ttl`: 1s is outside 3s..1h");
    let e = r
        .register("web", "a b", &reg("10.0.0.1", 80), Hold::Lease, now)
        .unwrap_err();
    assert!(e.to_string().starts_with("`id`: "), "{e}");
    let e = r
        .register("api", "a", &reg("10.0.0.1", 80), Hold::Lease, now)
        .unwrap_err();
    assert_eq!(e, RegistryError::NotRegistry("api".into()));
    assert!(r.list("web", now).unwrap().is_empty());
    // The limit: two fit, a third is refused, a renewal of one of the two is not.
    r.register("web", "a", &reg("10.0.0.1", 80), Hold::Lease, now)
        .unwrap();
    r.register("web", "b", &reg("10.0.0.2", 80), Hold::Lease, now)
        .unwrap();
    let e = r
        .register("web", "c", &reg("10.0.0.3", 80), Hold::Lease, now)
        .unwrap_err();
    assert!(matches!(e, RegistryError::Full { max: 2, .. }), "{e}");
    r.register("web", "b", &reg("10.0.0.2", 80), Hold::Lease, now)
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_holds_its_registration_until_it_closes() {
    let r = store();
    let now = Instant::now();
    r.register("web", "c", &reg("10.0.0.1", 80), Hold::Connection(7), now)
        .unwrap();
    // Another connection and a lease can't take the id over.
    assert!(
        r.register("web", "c", &reg("10.0.0.1", 80), Hold::Connection(8), now)
            .is_err()
    );
    assert!(
        r.register("web", "c", &reg("10.0.0.1", 80), Hold::Lease, now)
            .is_err()
    );
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
    assert!(!r.disconnect("web", "c", 8));
    assert!(r.disconnect("web", "c", 7));
    assert!(r.backends("web", Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn configure_keeps_registrations_of_services_kept() {
    let r = store();
    lease_now(&r, "a", "10.0.0.1");
    r.configure(
        Some("prod".into()),
        vec![("web".into(), policy()), ("api".into(), policy())],
    );
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
    assert!(r.scoped_token("api", b"scoped"));
    assert!(!r.scoped_token("api", b"other"));
    r.configure(Some("prod".into()), vec![("api".into(), policy())]);
    assert!(!r.has_service("web"));
}

#[tokio::test(start_paused = true)]
async fn saved_registrations_come_back_as_leases_with_one_ttl_of_grace() {
    let r = store();
    let now = Instant::now();
    let mut a = reg("10.0.0.1", 80);
    a.ttl = Some(Ttl::Seconds(60));
    r.register("web", "a", &a, Hold::Lease, now).unwrap();
    r.register("web", "c", &reg("10.0.0.2", 80), Hold::Connection(1), now)
        .unwrap();
    let saved = r.save();
    assert_eq!(saved.registrations.len(), 2);
    assert_eq!(saved.registrations[0].ttl_seconds, Some(60));
    assert_eq!(saved.registrations[1].ttl_seconds, None);

    let fresh = store();
    let (restored, problems) = fresh.restore(saved.clone(), now);
    assert_eq!((restored, problems.len()), (2, 0));
    let list = fresh.list("web", now).unwrap();
    assert_eq!(list[0].expires_in_seconds, Some(60.0));
    // The connection's registration waits ttl_default for its client, which takes it back.
    assert_eq!(list[1].expires_in_seconds, Some(10.0));
    fresh
        .register("web", "c", &reg("10.0.0.2", 80), Hold::Connection(9), now)
        .unwrap();

    // A daemon now in another environment takes none of them.
    let other = Registry::default();
    other.configure(Some("staging".into()), vec![("web".into(), policy())]);
    let (restored, problems) = other.restore(saved, now);
    assert_eq!((restored, problems.len()), (0, 2));
    assert!(problems[0].contains("environment"), "{problems:?}");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_lease_registered_later_still_lapses_on_time() {
    let r = store();
    let mut long = reg("10.0.0.1", 80);
    long.ttl = Some(Ttl::Seconds(60));
    r.register("web", "long", &long, Hold::Lease, Instant::now())
        .unwrap();
    r.changed().await;
    // The sweep now waits for the long lease; the short one must pull it earlier.
    let mut short = reg("10.0.0.2", 80);
    short.ttl = Some(Ttl::Seconds(5));
    r.register("web", "short", &short, Hold::Lease, Instant::now())
        .unwrap();
    r.changed().await;
    let started = Instant::now();
    r.changed().await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_set_handed_out_is_the_same_until_something_changes() {
    let r = store();
    let now = Instant::now();
    r.register("web", "b", &reg("10.0.0.2", 80), Hold::Lease, now)
        .unwrap();
    r.register("web", "a", &reg("10.0.0.2", 80), Hold::Lease, now)
        .unwrap();
    let first = r.backends("web", now);
    // Both registrations of one endpoint are in it, by id; the engine keeps the first.
    let ids: Vec<_> = first.iter().map(|b| b.id.as_deref()).collect();
    assert_eq!(ids, [Some("a"), Some("b")]);
    // Renewals, by PUT or POST, leave it as it is: no copy per renewal.
    r.register("web", "a", &reg("10.0.0.2", 80), Hold::Lease, now)
        .unwrap();
    r.renew("web", "b", now).unwrap();
    assert!(Arc::ptr_eq(&first, &r.backends("web", now)));
    r.deregister("web", "b", None, now).unwrap();
    let second = r.backends("web", now);
    assert_eq!(second.len(), 1);
    assert_eq!(
        first.len(),
        2,
        "a set handed out never changes under its holder"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_environment_drops_the_registrations_of_the_old_one() {
    let r = store();
    lease_now(&r, "a", "10.0.0.1");
    r.configure(Some("prod".into()), vec![("web".into(), policy())]);
    assert_eq!(r.backends("web", Instant::now()).len(), 1);
    r.configure(Some("staging".into()), vec![("web".into(), policy())]);
    assert!(r.backends("web", Instant::now()).is_empty());
    assert!(r.list("web", Instant::now()).unwrap().is_empty());
}
