// Waypoint pages: small behaviours that htmx attributes do not cover. No inline scripts.
(function () {
  "use strict";
  function liveStatus(connected) {
    document.querySelectorAll("[data-live-status]").forEach(function (el) {
      el.classList.toggle("connected", connected);
      el.textContent = connected ? "live" : "reconnecting…";
    });
  }
  document.addEventListener("htmx:sseOpen", function () { liveStatus(true); });
  document.addEventListener("htmx:sseError", function () { liveStatus(false); });
  // A swapped-in live update is briefly highlighted, so the agent notices what changed.
  document.addEventListener("htmx:sseMessage", function (event) {
    var target = event.target;
    if (target && target.classList) {
      target.classList.remove("fresh");
      void target.offsetWidth;
      target.classList.add("fresh");
    }
  });
  // <form data-reset-on-success>: cleared after the server accepted it.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail && event.detail.elt;
    if (form && form.matches && form.matches("form[data-reset-on-success]") &&
        event.detail.successful) {
      form.reset();
    }
  });
})();
