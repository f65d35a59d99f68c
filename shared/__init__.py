"""Code common to Waypoint's services: configuration, database, Kafka, auth, event contract."""
