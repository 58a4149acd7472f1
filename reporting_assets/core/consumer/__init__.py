"""The download consumer: poll -> pace -> call -> land -> commit, and the re-drive of dead letters."""
