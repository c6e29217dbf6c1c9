"""The site registry: a v2 API client, Harbor's projects API, and seeding images from the bundle."""
