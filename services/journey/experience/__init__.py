"""Experience by journey position (surveys tied to steps, moments of truth) and feedback on the
map's steps, computed from the map's maintained step log and the stored events."""
