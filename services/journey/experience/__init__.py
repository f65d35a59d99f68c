"""Experience by journey position (surveys tied to steps, moments of truth) and feedback on the
map's steps, computed from the map's maintained step log and the stored events. Importing the
package fills the journey health summary's ``experience`` slot (``health.py``)."""

from services.journey.experience import health as _health  # noqa: F401 - registers the slot
