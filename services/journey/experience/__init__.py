"""Experience by journey position (surveys tied to steps, moments of truth) and feedback on the
map's steps, computed from the map's maintained step log and the stored events. The endpoints
module fills the journey health summary's ``experience`` slot (``health.py``): importing the
package itself loads nothing, so the journey worker (which keeps the survey counts) stays free of
the HTTP stack."""
