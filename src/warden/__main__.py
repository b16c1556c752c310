from warden.entry import main

main()
