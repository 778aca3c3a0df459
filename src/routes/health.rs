//! Health checks of the route pools. Routes come and go with reloads, so their checks are
//! not Pingora services: `settings::RouteHealth` walks the routes in force every 250 ms and
//! calls [`check_if_due`], so a route a reload adds is checked within a second and a
//! removed one is no longer checked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::table::RoutePool;

/// Starts a round of checks of `route`'s pool when its interval has passed and none is
/// running; a slow node never delays another pool's round.
pub(crate) fn check_if_due(route: &Arc<RoutePool>) {
    let now = Instant::now();
    let schedule = &route.schedule;
    {
        let Ok(mut next) = schedule.next.lock() else {
            return;
        };
        if now < *next || schedule.running.swap(true, Ordering::AcqRel) {
            return;
        }
        *next = now + route.settings.pool.health_interval;
    }
    let route = route.clone();
    tokio::spawn(async move {
        route.pool.check().await;
        route.schedule.running.store(false, Ordering::Release);
    });
}
