"""Journey quality: pain points, first-contact resolution (FCR) and repeat contact, and the
journey health summary, built on the journey map's steps, journeys and segments."""
