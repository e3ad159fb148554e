def test_me_endpoint_names_the_key_owner_and_their_team(owner_client, team):
    response = owner_client.get("/api/me/")
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()["teams"]] == [team.slug]
